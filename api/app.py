"""The Starlette application: routes, error mapping at the edge, and the lifespan that wires it up.

`uvicorn --factory api.app:create_app`, or `python -m api` to serve with the settings' host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import routes
from api.appender import Appender
from api.auth import KeyStore
from api.cache import BalanceCache
from api.errors import error_response, http_error_response, internal_error
from api.hot import HEALTHY, HotRoutes
from api.limits import Cadence, Limits, TenantLimits
from api.metrics import WAITERS, CacheMetrics, MetricsMiddleware
from api.openapi import document
from api.progress import Listener, Progress, WaitLimits
from api.projector_group import ProjectorGroup
from api.responses import JSON
from api.store import ALL_LIMITS, LIMITS_OF, Store, init_connection, keep_session
from infra import gc_pauses
from infra import settings as settings_mod
from infra.settings import Settings
from ledger.errors import LedgerError
from ledger.positions import PositionKey

log = logging.getLogger("ledger.api")

READY_TIMEOUT_S = 1.0
HEARTBEAT_S = 1.0
WAITS_CHECK_S = 0.01  # how often the waits of this process's appends are looked at (`_saturation`)
POOL_APPLICATION = "ledger-api"  # in pg_stat_activity, with the process id: which backends serve which API
GC_THRESHOLDS = (20_000, 20, 100)


def ledger_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LedgerError)
    return error_response(exc)


def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return http_error_response(exc)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    return internal_error(exc, getattr(request.state, "request_id", None), request.method, request.url.path)


@routes.params()
async def healthz(request: Request) -> Response:
    return Response(HEALTHY, media_type="application/json")


@routes.params()
async def readyz(request: Request) -> Response:
    """Ready when every check passes; `problems` says why one does not."""
    context: routes.Context = request.app.state.ctx
    problems: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await context.store.ping()
    except (LedgerError, TimeoutError) as e:
        problems["database"] = e.message if isinstance(e, LedgerError) else "no answer within 1 s"
    end = await context.appender.log_end()
    if end is None:
        problems["kafka"] = "the log (Kafka) does not answer"
    notifications = request.app.state.listener.status()
    if notifications is not None:
        problems["notifications"] = notifications
    lag = None if end is None else sum(max(0, o - context.progress.applied.get(p, 0)) for p, o in end.items())
    projector = await _projector_problem(request.app.state.projector_group, lag, context.settings)
    if projector is not None:
        problems["projector"] = projector
    checks = {name: name not in problems for name in ("database", "kafka", "notifications", "projector")}
    body: dict[str, object] = {"status": "not_ready" if problems else "ready", "checks": checks,
                               "projector_lag_records": lag}
    if problems:
        body["problems"] = problems
    return JSON(body, status_code=503 if problems else 200)


async def _projector_problem(group: ProjectorGroup, lag: int | None, cfg: Settings) -> str | None:
    if lag is None:
        return "the projector's lag is unknown while Kafka does not answer"
    if lag > cfg.projector_lag_ready_max:
        return f"the projector lags by {lag} records (at most {cfg.projector_lag_ready_max})"
    return await group.problem()


@routes.params()
async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@routes.params()
async def openapi(request: Request) -> Response:
    return JSON(document(request.app.state.settings.wait_timeout_ms_max))


async def _warm(pool: asyncpg.Pool) -> None:
    """Run the hot reads once on every connection, holding them all at once so each one gets its turn."""
    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        for conn in connections:
            await Store.warm(conn)
    finally:
        for conn in connections:
            await pool.release(conn)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    cfg: Settings = app.state.settings
    # Every connection opened and warmed at start and kept: a request that had to open one (and prepare its
    # statement, and have its backend compile the plpgsql read) waited 20-130 ms, which was the p99 of reads.
    pool = await asyncpg.create_pool(cfg.api_database_url, min_size=cfg.db_pool_size_max,
                                     max_size=cfg.db_pool_size_max, max_inactive_connection_lifetime=0,
                                     init=init_connection, reset=keep_session, timeout=5, command_timeout=5,
                                     server_settings={"application_name": f"{POOL_APPLICATION}:{os.getpid()}"})
    await _warm(pool)
    keys = KeyStore(cfg.admin_token)
    progress = Progress(WaitLimits(cfg.waiters_max, cfg.waiters_tenant_max, cfg.waiters_key_max), app.state.positions)
    WAITERS.set_function(lambda: progress.waiting)
    store = Store(pool, cfg.db_acquire_timeout_ms / 1000, cfg.db_failover_wait_ms / 1000)
    lock = asyncio.Lock()

    limits = TenantLimits(Limits(cfg.tenant_writes_per_s, cfg.tenant_reads_per_s, cfg.tenant_burst_s),
                          cfg.api_inflight_fair, cfg.metrics_tenant_labels)

    async def on_keys(payload: str | None) -> None:
        async with lock, store.connection() as conn:
            if payload is None:
                await keys.load_all(conn)
                limits.replace_all({r["tenant"]: limits_of(r) for r in await conn.fetch(ALL_LIMITS)})
            elif payload.startswith("limits:"):
                row = await conn.fetchrow(LIMITS_OF, payload.partition(":")[2])
                limits.set(payload.partition(":")[2], None if row is None else limits_of(row))
            else:
                await keys.load_change(conn, payload)

    # The cache serves only while the listener that keeps it current has been heard from lately.
    cache = BalanceCache(cfg.balance_cache_entries, lambda: listener.fresh())
    listener = Listener(cfg.api_database_url, progress, on_keys, cache)
    cache_metrics = CacheMetrics(cache)
    REGISTRY.register(cache_metrics)
    await listener.start()
    appender = Appender(cfg.kafka_bootstrap, cfg.transactions_topic, cfg.api_linger_us)
    appender.start()
    app.state.ctx = routes.Context(cfg, keys, store, appender, progress, app.state.positions, cache, limits)
    heartbeat = asyncio.create_task(_heartbeat(store, limits))
    saturation = asyncio.create_task(_saturation(appender, progress, limits, cfg.api_shed_delay_ms / 1000,
                                                  cfg.api_backlog_records))
    app.state.listener = listener
    app.state.projector_group = ProjectorGroup(cfg.kafka_bootstrap, cfg.projector_group)
    # Everything allocated so far lives as long as the process: keep the collector from re-scanning it,
    # and let it run less often (requests allocate much and free it by reference counting): the tail latency
    # of reads comes partly from collections.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc_pauses.watch()
    try:
        yield
    finally:
        for task in (heartbeat, saturation):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        REGISTRY.unregister(cache_metrics)
        await app.state.projector_group.stop()
        await appender.stop()
        await listener.stop()
        await pool.close()


async def _saturation(appender: Appender, progress: Progress, limits: TenantLimits, delay_max_s: float,
                      backlog_max: int) -> None:
    """Every `WAITS_CHECK_S`: the tenants of this process's own appends that waited more than `delay_max_s` to be
    applied (from when they were sent), gathered over `ADJUST_S`, then handed to `TenantLimits.adjust` with those
    that have more than `backlog_max` not applied yet (the heaviest other writers are throttled while one waited,
    and a tenant with a long backlog is). The delay, not a count, is the signal: it is what a tenant's waited
    write feels, whatever made the machine slow; records others wrote (a flood straight to Kafka) do not count.
    Checked every 10 ms, an append applied in 25 ms counts as waiting at most 35.

    A tenant found waiting that no adjustment saw lately is acted on at once (`Cadence`)."""
    waited: set[str] = set()
    cadence = Cadence(time.monotonic())
    while True:
        now = time.monotonic()
        waited |= appender.waiting(progress.applied, now, delay_max_s + WAITS_CHECK_S)
        if cadence.due(waited, now):
            limits.adjust(frozenset(waited), now, appender.backlogged(backlog_max))
            waited.clear()
        await asyncio.sleep(WAITS_CHECK_S)


async def _heartbeat(store: Store, limits: TenantLimits) -> None:
    """Once a second: this process is alive, and enforces 1/n of every tenant's limit, n the live processes."""
    process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    while True:
        try:
            limits.set_processes(await store.heartbeat(process))
        except LedgerError as e:  # the database is away: the share stays what it was
            log.warning("API heartbeat failed: %s", e.message)
        await asyncio.sleep(HEARTBEAT_S)


def limits_of(row: asyncpg.Record) -> Limits:
    return Limits(row["writes_per_s"], row["reads_per_s"], row["burst_s"])


def create_app(cfg: Settings | None = None) -> MetricsMiddleware:
    cfg = cfg or settings_mod.load()
    if not cfg.admin_token:
        raise settings_mod.SettingsError("LEDGER_ADMIN_TOKEN must be set for the API")
    positions = PositionKey(settings_mod.require_position_key(cfg, "the API"))
    tenant = "/v1/tenants/{tenant}"
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/v1/tenants", routes.create_tenant, methods=["POST"]),
            Route(f"{tenant}/keys", routes.create_key, methods=["POST"]),
            Route(f"{tenant}/keys/{{key_id}}", routes.revoke_key, methods=["DELETE"]),
            Route(f"{tenant}/limits", routes.get_limits, methods=["GET"]),
            Route(f"{tenant}/limits", routes.put_limits, methods=["PUT"]),
            Route(f"{tenant}/transactions", routes.post_transaction, methods=["POST"]),
            Route(f"{tenant}/transactions", routes.list_transactions, methods=["GET"]),
            Route(f"{tenant}/accounts", routes.list_accounts, methods=["GET"]),
            Route(f"{tenant}/balances", routes.balance_sums, methods=["GET"]),
            Route(f"{tenant}/transactions/batch", routes.post_batch, methods=["POST"]),
            Route(f"{tenant}/transactions/{{id}}", routes.get_transaction, methods=["GET"]),
            Route(f"{tenant}/chain", routes.get_chain, methods=["GET"]),
            Route(f"{tenant}/transactions/{{id}}/reverse", routes.reverse_transaction, methods=["POST"]),
            Route(f"{tenant}/holds", routes.post_hold, methods=["POST"]),
            Route(f"{tenant}/holds/{{id}}", routes.get_hold, methods=["GET"]),
            Route(f"{tenant}/holds/{{id}}/capture", routes.capture_hold, methods=["POST"]),
            Route(f"{tenant}/holds/{{id}}/void", routes.void_hold, methods=["POST"]),
            Route(f"{tenant}/accounts/{{address}}", routes.get_account, methods=["GET"]),
            Route(f"{tenant}/accounts/{{address}}", routes.put_account, methods=["PUT"]),
            Route(f"{tenant}/accounts/{{address}}/entries", routes.get_entries, methods=["GET"]),
            Route(f"{tenant}/accounts/{{address}}/statement", routes.get_statement, methods=["GET"]),
            Route(f"{tenant}/webhooks", routes.create_webhook, methods=["POST"]),
            Route(f"{tenant}/webhooks", routes.list_webhooks, methods=["GET"]),
            Route(f"{tenant}/webhooks/{{id}}", routes.get_webhook, methods=["GET"]),
            Route(f"{tenant}/webhooks/{{id}}", routes.delete_webhook, methods=["DELETE"]),
            Route(f"{tenant}/webhooks/{{id}}/deliveries", routes.list_deliveries, methods=["GET"]),
            Route(f"{tenant}/monitors", routes.create_monitor, methods=["POST"]),
            Route(f"{tenant}/monitors", routes.list_monitors, methods=["GET"]),
            Route(f"{tenant}/monitors/{{id}}", routes.get_monitor, methods=["GET"]),
            Route(f"{tenant}/monitors/{{id}}", routes.delete_monitor, methods=["DELETE"]),
        ],
        exception_handlers={LedgerError: ledger_error, HTTPException: http_error, Exception: unexpected_error},
        lifespan=lifespan,
    )
    app.state.settings = cfg
    app.state.positions = positions
    return MetricsMiddleware(HotRoutes(app))
