"""Configuration read once per entrypoint from `LEDGER_*` environment variables.

Every setting has a default that points at the local services `make run` starts, and a bad value fails
fast with a message that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

TRANSACTIONS_TOPIC = "ledger.transactions"
OUTCOMES_TOPIC = "ledger.outcomes"
PROGRESS_CHANNEL = "ledger_progress"
KEYS_CHANNEL = "ledger_keys"
API_ROLE = "ledger_api"
PROJECTOR_ROLE = "ledger_projector"


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
    admin_token: str
    topic_partitions: int
    topic_replication: int
    batch_size_max: int
    batch_wait_ms: int
    wait_timeout_ms_max: int
    db_pool_size_max: int
    projector_lag_ready_max: int


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


def with_user(url: str, user: str) -> str:
    """The same PostgreSQL URL, connecting as `user` (keeping any password given for it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}@{host}{port}", parts.path, parts.query, parts.fragment))


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `env` (the process environment by default)."""
    env = os.environ if env is None else env
    database_url = env.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5433/ledger"
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(f"LEDGER_DATABASE_URL must be a postgresql:// URL, got {database_url!r}")
    return Settings(
        kafka_bootstrap=env.get("LEDGER_KAFKA_BOOTSTRAP") or "127.0.0.1:9092",
        database_url=database_url,
        api_database_url=env.get("LEDGER_API_DATABASE_URL") or with_user(database_url, API_ROLE),
        projector_database_url=env.get("LEDGER_PROJECTOR_DATABASE_URL")
        or with_user(database_url, PROJECTOR_ROLE),
        api_host=env.get("LEDGER_API_HOST") or "127.0.0.1",
        api_port=_int(env, "LEDGER_API_PORT", 8000, 1, 65535),
        admin_token=env.get("LEDGER_ADMIN_TOKEN", ""),
        topic_partitions=_int(env, "LEDGER_TOPIC_PARTITIONS", 4, 1, 1024),
        topic_replication=_int(env, "LEDGER_TOPIC_REPLICATION", 1, 1, 5),
        batch_size_max=_int(env, "LEDGER_BATCH_SIZE_MAX", 5000, 1, 100_000),
        batch_wait_ms=_int(env, "LEDGER_BATCH_WAIT_MS", 250, 1, 10_000),
        wait_timeout_ms_max=_int(env, "LEDGER_WAIT_TIMEOUT_MS_MAX", 30_000, 1, 600_000),
        db_pool_size_max=_int(env, "LEDGER_DB_POOL_SIZE_MAX", 20, 1, 1000),
        projector_lag_ready_max=_int(env, "LEDGER_PROJECTOR_LAG_READY_MAX", 100_000, 1, 10**12),
    )
