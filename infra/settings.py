"""Configuration: the one reader of the environment.

Every entrypoint (API, projector, `ledger`, `make run`/`make test`, the benchmarks) calls `load()` once.
Every setting has a default that points at the local services `make run` starts, and a bad value fails
fast with a `SettingsError` naming the variable.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

# The contract's topic names; a deployment (or a test session) may name its own.
TRANSACTIONS_TOPIC = "ledger.transactions"
OUTCOMES_TOPIC = "ledger.outcomes"
PROGRESS_CHANNEL = "ledger_progress"
KEYS_CHANNEL = "ledger_keys"
API_ROLE = "ledger_api"
PROJECTOR_ROLE = "ledger_projector"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TOPIC_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
POSITION_KEY_BYTES = 32
# base64 of 32 bytes, either alphabet, padded or not: `secrets.token_urlsafe(32)`, `openssl rand -base64 32`.
_POSITION_KEY = re.compile(r"[A-Za-z0-9+/_-]{43}=?", re.ASCII)


class SettingsError(ValueError):
    """A `LEDGER_*` variable holds a value the ledger cannot run with."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an entrypoint needs to know about its surroundings."""

    kafka_bootstrap: str
    database_url: str
    api_database_url: str
    projector_database_url: str
    api_host: str
    api_port: int
    api_workers: int
    projectors: int
    admin_token: str
    # The key of the position tokens API clients get (ledger.positions.PositionKey); None when unset, which
    # the API and the projector refuse (`require_position_key`). Never in a repr: it is a secret.
    position_key: bytes | None = field(repr=False)
    transactions_topic: str
    outcomes_topic: str
    topic_partitions: int
    topic_replication: int
    batch_size_max: int
    writes_in_flight: int
    batch_wait_ms: int
    wait_timeout_ms_max: int
    db_pool_size_max: int
    db_acquire_timeout_ms: int
    api_concurrency_max: int
    api_backlog_max: int
    api_keep_alive_timeout_s: int
    waiters_max: int
    waiters_tenant_max: int
    waiters_key_max: int
    balance_cache_entries: int
    projector_lag_ready_max: int
    projector_group: str
    projector_metrics_port: int
    log_level: str | None  # None: each process's own default
    kafka_external: bool  # LEDGER_KAFKA_BOOTSTRAP was set: `make run`/`make test` start no broker
    database_external: bool  # LEDGER_DATABASE_URL was set: they start no cluster
    kafka_home: str | None  # an unpacked Kafka distribution to run instead of fetching its jars
    kafka_heap: str
    # Fair shares (contract v3): every tenant's default limits, and the requests in progress past which an API
    # process admits each tenant only its equal share.
    tenant_writes_per_s: int = 1000
    tenant_reads_per_s: int = 5000
    tenant_burst_s: int = 2
    api_inflight_fair: int = 256
    metrics_tenant_labels: bool = False  # a tenant label on the 429 counter (one series per tenant refused)
    # How long an API read waits for the database to come back (a failover) before 503: 0 answers at once.
    db_failover_wait_ms: int = 0
    # How long one of this API process's appends may wait to be applied before the heaviest writers are
    # throttled, and how many of one tenant's unwaited appends may wait to be applied before that tenant is.
    api_shed_delay_ms: int = 20
    api_backlog_records: int = 200
    # How long the API's producer gathers appends into one request to Kafka (librdkafka's linger.ms), in µs.
    api_linger_us: int = 500
    # `ledger/` run as Python whatever is built (`pure_asked`, read before the settings are).
    pure: bool = False
    # Events out (contract v3): hosts a webhook may name though they resolve to loopback or private addresses
    # (local use only), the dispatcher's consumer group and metrics port, and how many deliveries it runs at once
    # in all and to one endpoint.
    webhook_allow_hosts: frozenset[str] = frozenset()
    dispatcher_group: str = "ledger-dispatcher"
    dispatcher_metrics_port: int = 0
    # Where the projector's and the dispatcher's metrics listen (compose: 0.0.0.0, for Prometheus's container).
    metrics_host: str = "127.0.0.1"
    deliveries_in_flight: int = 512
    deliveries_per_endpoint: int = 8


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _topic(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not 1 <= len(value) <= 200 or not set(value) <= TOPIC_NAME_CHARS:
        raise SettingsError(f"{name} must be a Kafka topic name ([A-Za-z0-9._-], 1 to 200), got {value!r}")
    return value


def _log_level(env: Mapping[str, str]) -> str | None:
    raw = env.get("LEDGER_LOG_LEVEL") or None
    if raw is not None and raw.upper() not in LOG_LEVELS:
        raise SettingsError(f"LEDGER_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw.upper() if raw else None


def _heap(env: Mapping[str, str]) -> str:
    value = env.get("LEDGER_KAFKA_HEAP") or "768m"
    if not value[:-1].isdigit() or value[-1] not in "kmgKMG":
        raise SettingsError(f"LEDGER_KAFKA_HEAP must be a JVM size such as 768m or 1g, got {value!r}")
    return value


def _position_key(env: Mapping[str, str]) -> bytes | None:
    raw = env.get("LEDGER_POSITION_KEY") or None
    if raw is None:
        return None
    problem = f"LEDGER_POSITION_KEY must be {POSITION_KEY_BYTES} random bytes in base64 (make one with " \
              "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
    if _POSITION_KEY.fullmatch(raw) is None:  # the value itself is never echoed: it is a secret
        raise SettingsError(f"{problem}; the value set ({len(raw)} characters) is not")
    try:
        key = base64.urlsafe_b64decode(raw.rstrip("=").replace("+", "-").replace("/", "_") + "=")
    except (binascii.Error, ValueError):
        raise SettingsError(problem) from None
    assert len(key) == POSITION_KEY_BYTES
    return key


def require_position_key(cfg: Settings, who: str) -> bytes:
    """The position key, which `who` (a process that makes or reads position tokens) cannot run without."""
    if cfg.position_key is None:
        raise SettingsError(f"LEDGER_POSITION_KEY must be set for {who} (`make run` and `make test` set one)")
    return cfg.position_key


def _postgres_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if not value.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"{name} must be a postgresql:// URL, got {value!r}")
    return value


def with_user(url: str, user: str) -> str:
    """The same PostgreSQL URL, connecting as `user` without the owner's password. The hosts are kept as
    written: a multi-host URL (`@h1:5432,h2:5432/db?target_session_attrs=read-write`) stays one."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{hosts}", parts.path, parts.query, parts.fragment))


def with_database(url: str, database: str) -> str:
    """The same PostgreSQL URL, on another database of the same cluster."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def pure_asked(env: Mapping[str, str] | None = None) -> bool:
    """`LEDGER_PURE`: run `ledger/` as Python even where a compiled build is current (`infra.compiled.use`).
    Apart from `load`, which a process calls later: the choice is made before any module of `ledger` is
    imported, and `load` validates settings that tooling run without."""
    return (os.environ if env is None else env).get("LEDGER_PURE", "") not in ("", "0")


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `env` (the process environment by default)."""
    env = os.environ if env is None else env
    database_url = _postgres_url(env, "LEDGER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5433/ledger")
    return Settings(
        kafka_bootstrap=env.get("LEDGER_KAFKA_BOOTSTRAP") or "127.0.0.1:9092",
        database_url=database_url,
        api_database_url=_postgres_url(env, "LEDGER_API_DATABASE_URL", with_user(database_url, API_ROLE)),
        projector_database_url=_postgres_url(env, "LEDGER_PROJECTOR_DATABASE_URL",
                                             with_user(database_url, PROJECTOR_ROLE)),
        api_host=env.get("LEDGER_API_HOST") or "127.0.0.1",
        api_port=_int(env, "LEDGER_API_PORT", 8000, 1, 65535),
        api_workers=_int(env, "LEDGER_API_WORKERS", 1, 1, 64),
        projectors=_int(env, "LEDGER_PROJECTORS", 1, 1, 64),
        admin_token=env.get("LEDGER_ADMIN_TOKEN", ""),
        position_key=_position_key(env),
        transactions_topic=_topic(env, "LEDGER_TRANSACTIONS_TOPIC", TRANSACTIONS_TOPIC),
        outcomes_topic=_topic(env, "LEDGER_OUTCOMES_TOPIC", OUTCOMES_TOPIC),
        topic_partitions=_int(env, "LEDGER_TOPIC_PARTITIONS", 4, 1, 1024),
        topic_replication=_int(env, "LEDGER_TOPIC_REPLICATION", 1, 1, 5),
        batch_size_max=_int(env, "LEDGER_BATCH_SIZE_MAX", 5000, 1, 100_000),
        writes_in_flight=_int(env, "LEDGER_WRITES_IN_FLIGHT", 2, 1, 4),
        batch_wait_ms=_int(env, "LEDGER_BATCH_WAIT_MS", 250, 1, 10_000),
        wait_timeout_ms_max=_int(env, "LEDGER_WAIT_TIMEOUT_MS_MAX", 30_000, 1, 600_000),
        db_pool_size_max=_int(env, "LEDGER_DB_POOL_SIZE_MAX", 20, 1, 1000),
        db_acquire_timeout_ms=_int(env, "LEDGER_DB_ACQUIRE_TIMEOUT_MS", 1000, 1, 60_000),
        api_concurrency_max=_int(env, "LEDGER_API_CONCURRENCY_MAX", 2000, 1, 1_000_000),
        api_backlog_max=_int(env, "LEDGER_API_BACKLOG_MAX", 2048, 1, 65535),
        api_keep_alive_timeout_s=_int(env, "LEDGER_API_KEEP_ALIVE_TIMEOUT_S", 5, 1, 3600),
        waiters_max=_int(env, "LEDGER_WAITERS_MAX", 20_000, 1, 1_000_000),
        waiters_tenant_max=_int(env, "LEDGER_WAITERS_TENANT_MAX", 2_000, 1, 1_000_000),
        waiters_key_max=_int(env, "LEDGER_WAITERS_KEY_MAX", 1_000, 1, 1_000_000),
        balance_cache_entries=_int(env, "LEDGER_BALANCE_CACHE_ENTRIES", 100_000, 0, 10_000_000),
        projector_lag_ready_max=_int(env, "LEDGER_PROJECTOR_LAG_READY_MAX", 100_000, 1, 10**12),
        projector_group=env.get("LEDGER_PROJECTOR_GROUP") or "ledger-projector",
        projector_metrics_port=_int(env, "LEDGER_PROJECTOR_METRICS_PORT", 0, 0, 65535),
        log_level=_log_level(env),
        kafka_external=bool(env.get("LEDGER_KAFKA_BOOTSTRAP")),
        database_external=bool(env.get("LEDGER_DATABASE_URL")),
        kafka_home=env.get("KAFKA_HOME") or None,
        kafka_heap=_heap(env),
        tenant_writes_per_s=_int(env, "LEDGER_TENANT_WRITES_PER_S", 1000, 1, 10_000_000),
        tenant_reads_per_s=_int(env, "LEDGER_TENANT_READS_PER_S", 5000, 1, 10_000_000),
        tenant_burst_s=_int(env, "LEDGER_TENANT_BURST_S", 2, 1, 3600),
        api_inflight_fair=_int(env, "LEDGER_API_INFLIGHT_FAIR", 256, 1, 1_000_000),
        metrics_tenant_labels=_int(env, "LEDGER_METRICS_TENANT_LABELS", 0, 0, 1) == 1,
        db_failover_wait_ms=_int(env, "LEDGER_DB_FAILOVER_WAIT_MS", 0, 0, 120_000),
        api_shed_delay_ms=_int(env, "LEDGER_API_SHED_DELAY_MS", 20, 1, 3_600_000),
        api_backlog_records=_int(env, "LEDGER_API_BACKLOG_RECORDS", 200, 1, 10_000_000),
        api_linger_us=_int(env, "LEDGER_API_LINGER_US", 500, 0, 100_000),
        pure=pure_asked(env),
        webhook_allow_hosts=frozenset(h.strip().lower() for h in env.get("LEDGER_WEBHOOK_ALLOW_HOSTS", "").split(",")
                                      if h.strip()),
        dispatcher_group=env.get("LEDGER_DISPATCHER_GROUP") or "ledger-dispatcher",
        dispatcher_metrics_port=_int(env, "LEDGER_DISPATCHER_METRICS_PORT", 0, 0, 65535),
        metrics_host=env.get("LEDGER_METRICS_HOST") or "127.0.0.1",
        deliveries_in_flight=_int(env, "LEDGER_DELIVERIES_IN_FLIGHT", 512, 1, 100_000),
        deliveries_per_endpoint=_int(env, "LEDGER_DELIVERIES_PER_ENDPOINT", 8, 1, 1000),
    )
