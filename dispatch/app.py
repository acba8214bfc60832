"""The dispatcher: contract v3's events out, a process of its own (`python -m dispatch`).

It reads `ledger.outcomes` in a consumer group of its own, turns each decision into events (dispatch/events.py)
for the endpoints subscribed to them, and keeps every event and delivery in PostgreSQL before it commits its
Kafka offsets: a restart re-reads at most what it had not committed, and the events' ids (derived from their
place in the log) make the second reading store nothing. Deliveries are claimed with a lease, so one that a
crash interrupted is sent again once its lease runs out (at least once).

Each endpoint has a bounded queue and its own few workers, under one bound on all deliveries in flight: an
endpoint that is slow or dead fills its own queue and no other's, and nothing here is on the path of a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import random
import signal
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from api import views
from api.routes.common import transaction_view
from api.store import Store, init_connection
from dispatch.events import CROSSED, HOLD_EVENTS, Event, events_of, wanted
from dispatch.net import DeliveryError, UrlNotAllowed, parse_url, post, resolve
from dispatch.signing import sign
from infra import logs
from infra import settings as settings_mod
from infra.settings import Settings
from ledger.positions import PositionKey

log = logging.getLogger("ledger.dispatcher")

FETCH_RECORDS_MAX = 1000
FETCH_WAIT_MS = 100
# A delivery's lease: taken when it is queued and renewed when a worker takes it up, longer than one attempt
# (a lookup, 5 s to connect, 10 s for the answer); past it another process may claim it.
LEASE_S = 60
POLL_INTERVAL_S = 0.5
CLAIM_PER_ENDPOINT = 50  # claimed per endpoint per poll: one endpoint's backlog does not hold back another's
QUEUE_MAX = 1000  # deliveries waiting per endpoint in this process; past it they wait in PostgreSQL
RETRY_BASE_S = 5.0
RETRY_CAP_S = 3600.0
GIVE_UP_AFTER = timedelta(hours=24)
NOT_READY_RETRY_S = 0.5  # the decision is published before its batch commits: its rows may not be there yet
RESOLVES_PER_TENANT = 4  # name lookups of one tenant's endpoints at once (they hold threads of their own)
CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 10.0
ANSWER_CAP = 64 * 1024
ERROR_LEN_MAX = 300
BACKLOG_INTERVAL_S = 5.0
CANCEL_BATCH = 5000  # pending deliveries of deleted endpoints cancelled per round
STATEMENT_TIMEOUT_MS = "10000"

EVENTS = Counter("ledger_webhook_events_total", "Events taken from the log's decisions for some endpoint", ["type"])
DELIVERIES = Counter("ledger_webhook_deliveries_total", "Delivery attempts by result", ["result"])
LATENCY = Histogram("ledger_webhook_delivery_seconds", "From the decision's publication to its acknowledgement",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400))
BACKLOG = Gauge("ledger_webhook_backlog", "Deliveries pending per endpoint", ["webhook"])
CONSUMED = Counter("ledger_dispatcher_outcomes_total", "Outcomes read from the log")

INSERT_EVENTS = """
INSERT INTO webhook_events (id, tenant, type, subject, position, occurred_at, crossing)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[])
ON CONFLICT (id) DO NOTHING
"""
INSERT_DELIVERIES = """
INSERT INTO webhook_deliveries (event_id, webhook_id, tenant, state, next_at, leased_by, give_up_at)
SELECT e, w, t, 'pending', now() + make_interval(secs => $4), $6, g
FROM unnest($1::text[], $2::text[], $3::text[], $5::timestamptz[]) AS d(e, w, t, g)
ON CONFLICT (event_id, webhook_id) DO NOTHING
RETURNING event_id, webhook_id, tenant, attempts, give_up_at
"""
# Per active endpoint whose queue here has room, its deliveries that are due (retries, and those a stopped
# process held), oldest first, at most `$2` each: leased to this process (`$3`).
CLAIM_DUE = """
UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $1), leased_by = $3
FROM (SELECT x.event_id, x.webhook_id FROM webhooks w
      CROSS JOIN LATERAL (SELECT event_id, webhook_id FROM webhook_deliveries
                          WHERE tenant = w.tenant AND webhook_id = w.id AND state = 'pending' AND next_at <= now()
                          ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED) x
      WHERE w.deleted_at IS NULL AND NOT (w.id = ANY($4::text[]))) due
WHERE d.event_id = due.event_id AND d.webhook_id = due.webhook_id
RETURNING d.event_id, d.webhook_id, d.tenant, d.attempts, d.give_up_at
"""
# Taken up by a worker: the lease renewed, if this process still holds it and the delivery is still pending.
RENEW = """
UPDATE webhook_deliveries SET next_at = now() + make_interval(secs => $3)
WHERE event_id = $1 AND webhook_id = $2 AND state = 'pending' AND leased_by = $4
RETURNING attempts, give_up_at
"""
ACTIVE_WEBHOOKS = "SELECT tenant, id, url, events, secret, created_at FROM webhooks WHERE deleted_at IS NULL"
LAST_CHANGE = "SELECT max(changed_at) FROM webhooks"
CANCEL_DELETED = """
UPDATE webhook_deliveries d SET state = 'cancelled'
FROM (SELECT x.event_id, x.webhook_id FROM webhooks w
      CROSS JOIN LATERAL (SELECT event_id, webhook_id FROM webhook_deliveries
                          WHERE tenant = w.tenant AND webhook_id = w.id AND state = 'pending' LIMIT $1) x
      WHERE w.deleted_at IS NOT NULL AND w.deleted_at > now() - interval '25 hours') gone
WHERE d.event_id = gone.event_id AND d.webhook_id = gone.webhook_id
"""


class Webhook(NamedTuple):
    tenant: str
    id: str
    url: str
    events: frozenset[str]
    secret: str
    created_at: datetime


class Delivery(NamedTuple):
    event_id: str
    webhook_id: str
    tenant: str
    attempts: int
    give_up_at: datetime


def retry_delay_s(attempts: int, rng: random.Random | None = None) -> float:
    """After `attempts` failures: 5 s doubling up to an hour, each with full jitter over its upper half (the
    first retry within 10 s, as the contract says; a crowd of failures spreads out)."""
    base = min(RETRY_BASE_S * 2 ** min(attempts - 1, 20), RETRY_CAP_S)
    draw = float(rng.random() if rng is not None else random.random())
    return float(base / 2 + draw * base / 2)


class Directory:
    """The active endpoints, from PostgreSQL. Reloaded when the latest registration or deletion (`changed_at`)
    is newer than the one this view has: a cheap probe of an index per batch of decisions, the whole list only
    when something changed."""

    def __init__(self) -> None:
        self.by_tenant: dict[str, list[Webhook]] = {}
        self.by_id: dict[tuple[str, str], Webhook] = {}
        self.changed_at: datetime | None = None
        self.lock = asyncio.Lock()  # one load at a time: an older snapshot never lands after a newer one

    async def refresh(self, conn: asyncpg.Connection, force: bool = False) -> None:
        async with self.lock:
            changed = await conn.fetchval(LAST_CHANGE)
            if changed is not None and changed == self.changed_at and not force:
                return
            rows = await conn.fetch(ACTIVE_WEBHOOKS)
            by_tenant: dict[str, list[Webhook]] = {}
            for r in rows:
                hook = Webhook(r["tenant"], r["id"], r["url"], frozenset(r["events"]), r["secret"], r["created_at"])
                by_tenant.setdefault(hook.tenant, []).append(hook)
            self.by_tenant, self.changed_at = by_tenant, changed
            self.by_id = {(h.tenant, h.id): h for hooks in by_tenant.values() for h in hooks}

    def subscribed(self, event: Event, at: datetime) -> list[Webhook]:
        """The endpoints that take `event`: subscribed to its type, and registered by the time it happened."""
        return [h for h in self.by_tenant.get(event.tenant, ()) if h.created_at <= at and wanted(h.events, event.type)]


class Endpoint:
    """One endpoint's queue and its workers in this process: started as deliveries arrive, up to the bound, and
    gone when the queue is empty (an endpoint with nothing to send costs nothing)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_MAX)
        self.workers: set[asyncio.Task[None]] = set()


class Dispatcher:
    def __init__(self, cfg: Settings, key: bytes) -> None:
        self.cfg = cfg
        self.key = key
        self.positions = PositionKey(key)
        self.directory = Directory()
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.queued: set[tuple[str, str]] = set()  # (event, webhook) queued or in flight here
        self.in_flight = asyncio.Semaphore(cfg.deliveries_in_flight)
        self.resolving: dict[str, asyncio.Semaphore] = {}  # per tenant
        self.stopping = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.store: Store | None = None  # the API's reads, for an event's data as its GET shows it
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # whose leases

    # --- the loop --------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        settings = {"statement_timeout": STATEMENT_TIMEOUT_MS}
        self.pool = await asyncpg.create_pool(self.cfg.projector_database_url, min_size=1, max_size=8, timeout=5,
                                              server_settings=settings)
        api_pool = await asyncpg.create_pool(self.cfg.api_database_url, min_size=1, max_size=4, timeout=5,
                                             init=init_connection, server_settings=settings)
        self.store = Store(api_pool, acquire_timeout_s=5.0)
        consumer = AIOKafkaConsumer(self.cfg.outcomes_topic, bootstrap_servers=self.cfg.kafka_bootstrap,
                                    group_id=self.cfg.dispatcher_group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_poll_records=FETCH_RECORDS_MAX,
                                    session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
        await consumer.start()
        tasks = [asyncio.create_task(self._consume(consumer)), asyncio.create_task(self._poll()),
                 asyncio.create_task(self._backlog())]
        try:
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t is not stop and t.exception() is not None]
            for task in failed:
                log.critical("the dispatcher failed; exiting for a clean restart", exc_info=task.exception())
            return 1 if failed else 0
        finally:
            for task in tasks + [w for e in self.endpoints.values() for w in list(e.workers)]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.pool.close()
            await api_pool.close()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Decisions in, events and deliveries stored, then the offsets committed; new deliveries go straight
        to their endpoints' queues (their lease is this process's)."""
        assert self.pool is not None
        while not self.stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=FETCH_RECORDS_MAX)
            messages = [m for batch in fetched.values() for m in batch]
            if not messages:
                continue
            CONSUMED.inc(len(messages))
            async with self.pool.acquire() as conn:
                await self.directory.refresh(conn)  # an endpoint registered since may take some of these
                found: list[tuple[Event, datetime, list[Webhook]]] = []
                for m in messages:
                    if not self.directory.by_tenant:
                        break
                    try:
                        outcome = orjson.loads(m.value or b"")
                    except orjson.JSONDecodeError:
                        log.warning("an outcome that is not JSON at %d-%d", m.partition, m.offset)
                        continue
                    if not isinstance(outcome, dict) or outcome.get("tenant") not in self.directory.by_tenant:
                        continue
                    at = datetime.fromtimestamp(m.timestamp / 1000, UTC)
                    for event in events_of(outcome, self.key):
                        hooks = self.directory.subscribed(event, at)
                        if hooks:
                            found.append((event, at, hooks))
                fresh = await self._store(conn, found) if found else []
            await consumer.commit()
            for delivery in fresh:
                self._enqueue(delivery)

    async def _store(self, conn: asyncpg.Connection, found: list[tuple[Event, datetime, list[Webhook]]]
                     ) -> list[Delivery]:
        give_up = datetime.now(UTC) + GIVE_UP_AFTER
        async with conn.transaction():
            await conn.execute(INSERT_EVENTS, [e.id for e, _, _ in found], [e.tenant for e, _, _ in found],
                               [e.type for e, _, _ in found], [e.subject for e, _, _ in found],
                               [e.position for e, _, _ in found], [at for _, at, _ in found],
                               [None if e.crossing is None else orjson.dumps(e.crossing).decode()
                                for e, _, _ in found])
            pairs = [(e, h) for e, _, hooks in found for h in hooks]
            rows = await conn.fetch(INSERT_DELIVERIES, [e.id for e, _ in pairs], [h.id for _, h in pairs],
                                    [e.tenant for e, _ in pairs], float(LEASE_S), [give_up] * len(pairs), self.me)
        for event, _, _ in found:
            EVENTS.labels(event.type).inc()
        return [Delivery(r["event_id"], r["webhook_id"], r["tenant"], r["attempts"], r["give_up_at"]) for r in rows]

    async def _poll(self) -> None:
        """Claim the deliveries that are due (retries, and those a stopped process left) and queue them."""
        assert self.pool is not None
        while not self.stopping.is_set():
            await asyncio.sleep(POLL_INTERVAL_S)
            full = [key[1] for key, e in self.endpoints.items() if e.queue.qsize() > QUEUE_MAX - CLAIM_PER_ENDPOINT]
            try:
                async with self.pool.acquire() as conn:
                    await self.directory.refresh(conn)
                    rows = await conn.fetch(CLAIM_DUE, float(LEASE_S), CLAIM_PER_ENDPOINT, self.me, full)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("could not claim due deliveries (%r)", e)
                continue
            for r in rows:
                self._enqueue(Delivery(r["event_id"], r["webhook_id"], r["tenant"], r["attempts"], r["give_up_at"]))

    async def _backlog(self) -> None:
        assert self.pool is not None
        shown: set[str] = set()
        while not self.stopping.is_set():
            try:
                cancelled = await self.pool.execute(CANCEL_DELETED, CANCEL_BATCH)
                DELIVERIES.labels("cancelled").inc(int(cancelled.split()[-1]))
                rows = await self.pool.fetch("SELECT webhook_id, count(*) AS n FROM webhook_deliveries"
                                             " WHERE state = 'pending' GROUP BY webhook_id")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.info("could not count the backlog (%r)", e)
            else:
                now = {r["webhook_id"]: r["n"] for r in rows}
                for gone in shown - now.keys():
                    BACKLOG.remove(gone)
                for webhook, n in now.items():
                    BACKLOG.labels(webhook).set(n)
                shown = set(now)
            await asyncio.sleep(BACKLOG_INTERVAL_S)

    # --- deliveries ------------------------------------------------------------------------------------

    def _enqueue(self, delivery: Delivery) -> None:
        mark = (delivery.event_id, delivery.webhook_id)
        if mark in self.queued:
            return
        key = (delivery.tenant, delivery.webhook_id)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            endpoint = self.endpoints[key] = Endpoint()
        try:
            endpoint.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            return  # it stays pending in PostgreSQL; claimed again once its lease runs out
        self.queued.add(mark)
        # A worker that has just finished stays in the set until its done-callback runs: not counted.
        running = sum(1 for w in endpoint.workers if not w.done())
        if running < min(self.cfg.deliveries_per_endpoint, endpoint.queue.qsize()):
            worker = asyncio.create_task(self._work(key, endpoint))
            endpoint.workers.add(worker)
            worker.add_done_callback(endpoint.workers.discard)

    async def _work(self, key: tuple[str, str], endpoint: Endpoint) -> None:
        while not endpoint.queue.empty():
            delivery = endpoint.queue.get_nowait()
            try:
                async with self.in_flight:
                    await self._attempt(delivery)
            except Exception:  # one delivery's fault (the database away) ends no worker: its lease brings it back
                log.warning("a delivery attempt failed unexpectedly", exc_info=True)
            finally:
                self.queued.discard((delivery.event_id, delivery.webhook_id))
        others = sum(1 for w in endpoint.workers if not w.done() and w is not asyncio.current_task())
        if endpoint.queue.empty() and not others and self.endpoints.get(key) is endpoint:
            del self.endpoints[key]

    async def _attempt(self, delivery: Delivery) -> None:
        assert self.pool is not None
        renewed = await self.pool.fetchrow(RENEW, delivery.event_id, delivery.webhook_id, float(LEASE_S), self.me)
        if renewed is None:  # delivered, cancelled, or claimed by another process since it was queued here
            return
        delivery = delivery._replace(attempts=renewed["attempts"], give_up_at=renewed["give_up_at"])
        hook = await self._webhook(delivery)
        if hook is None:
            await self._finish(delivery, "cancelled", delivery.attempts)
            DELIVERIES.labels("cancelled").inc()
            return
        event = await self.pool.fetchrow("SELECT * FROM webhook_events WHERE id = $1", delivery.event_id)
        body = await self._body(event)
        if body is None:  # its decision's rows are not committed yet: not an attempt
            await self._reschedule(delivery, NOT_READY_RETRY_S)
            return
        attempt = delivery.attempts + 1
        status: int | None = None
        problem: str | None = None
        try:
            target = parse_url(hook.url)
            async with self.resolving.setdefault(delivery.tenant, asyncio.Semaphore(RESOLVES_PER_TENANT)):
                addresses = await resolve(target, self.cfg.webhook_allow_hosts, CONNECT_TIMEOUT_S)
            answer = await post(target, addresses, body, {"Ledger-Event-Id": event["id"],
                                                          "Ledger-Signature": sign(hook.secret, body,
                                                                                   int(time.time()))},
                                CONNECT_TIMEOUT_S, ANSWER_TIMEOUT_S, ANSWER_CAP)
            status = answer.status
            if not 200 <= status < 300:
                problem = f"answered {status}"
        except UrlNotAllowed as e:
            log.info("webhook address refused", extra={"tenant": delivery.tenant, "reason": e.message})
            problem = "url_not_allowed: the host must resolve only to public addresses"
        except DeliveryError as e:
            problem = e.message
        error = None if problem is None else problem[:ERROR_LEN_MAX]
        await self.pool.execute("INSERT INTO webhook_attempts (tenant, webhook_id, event_id, attempt, status_code,"
                                " error) VALUES ($1, $2, $3, $4, $5, $6)", delivery.tenant, delivery.webhook_id,
                                delivery.event_id, attempt, status, error)
        if problem is None:
            await self._finish(delivery, "delivered", attempt)
            DELIVERIES.labels("delivered").inc()
            LATENCY.observe(max(0.0, (datetime.now(UTC) - event["occurred_at"]).total_seconds()))
            return
        DELIVERIES.labels("refused" if problem.startswith("url_not_allowed") else "failed").inc()
        if datetime.now(UTC) >= delivery.give_up_at:
            await self._finish(delivery, "failed", attempt)
            DELIVERIES.labels("gave_up").inc()
            return
        await self._reschedule(delivery._replace(attempts=attempt), retry_delay_s(attempt))

    async def _webhook(self, delivery: Delivery) -> Webhook | None:
        """The endpoint, from this process's view; one it does not know is looked up again before its delivery is
        cancelled (a view a second old may not have it yet)."""
        assert self.pool is not None
        hook = self.directory.by_id.get((delivery.tenant, delivery.webhook_id))
        if hook is None:
            async with self.pool.acquire() as conn:
                await self.directory.refresh(conn, force=True)
            hook = self.directory.by_id.get((delivery.tenant, delivery.webhook_id))
        return hook

    async def _finish(self, delivery: Delivery, state: str, attempts: int) -> None:
        """Close a delivery, if this process still holds its lease (else whoever claimed it decides)."""
        assert self.pool is not None
        await self.pool.execute("UPDATE webhook_deliveries SET state = $3, attempts = $4,"
                                " delivered_at = CASE WHEN $3 = 'delivered' THEN now() END"
                                " WHERE event_id = $1 AND webhook_id = $2 AND state = 'pending' AND leased_by = $5",
                                delivery.event_id, delivery.webhook_id, state, attempts, self.me)

    async def _reschedule(self, delivery: Delivery, delay_s: float) -> None:
        """Due again after `delay_s`; the lease is let go, so any process may claim it then."""
        assert self.pool is not None
        await self.pool.execute("UPDATE webhook_deliveries SET next_at = now() + make_interval(secs => $3),"
                                " attempts = $4, leased_by = NULL WHERE event_id = $1 AND webhook_id = $2"
                                " AND state = 'pending' AND leased_by = $5",
                                delivery.event_id, delivery.webhook_id, delay_s, delivery.attempts, self.me)

    async def _body(self, event: asyncpg.Record) -> bytes | None:
        """What every attempt of `event` sends: built once (a retry's signature covers the same bytes), from
        its transaction or hold as their GET shows them; None while they are not committed yet."""
        assert self.pool is not None
        if event["body"] is not None:
            return bytes(event["body"])
        data = await self._data(event)
        if data is None:  # tried again until its delivery gives up: never a body without its data
            return None
        body = orjson.dumps({"id": event["id"], "type": event["type"], "tenant": event["tenant"],
                             "position": event["position"], "created_at": views.timestamp(event["occurred_at"]),
                             "data": data})
        stored = await self.pool.fetchval("UPDATE webhook_events SET body = $2 WHERE id = $1 AND body IS NULL"
                                          " RETURNING body", event["id"], body)
        if stored is None:  # another worker built it first: send the same bytes
            stored = await self.pool.fetchval("SELECT body FROM webhook_events WHERE id = $1", event["id"])
        return bytes(stored)

    async def _data(self, event: asyncpg.Record) -> dict[str, Any] | None:
        assert self.store is not None
        if event["type"] == CROSSED:
            crossing: dict[str, Any] = orjson.loads(event["crossing"])
            return crossing
        tenant, subject = event["tenant"], event["subject"]
        if event["type"] in HOLD_EVENTS:
            hold_id = subject
            if event["type"] in ("hold.captured", "hold.voided"):
                row = await self.store.transaction(tenant, subject)
                if row is None:
                    return None
                hold_id = row["target"]
            hold = await self.store.hold(tenant, hold_id)
            return None if hold is None else views.hold(hold, self.positions, tenant)
        row = await self.store.transaction(tenant, subject)
        return None if row is None else await transaction_view(self.store, self.positions, tenant, row)


async def _main(cfg: Settings, key: bytes) -> int:
    try:
        return await Dispatcher(cfg, key).run()
    except (OSError, KafkaError, asyncpg.PostgresError, TimeoutError):
        log.critical("the dispatcher could not start or lost a dependency; exiting for a restart", exc_info=True)
        return 1


def main() -> None:
    try:
        cfg = settings_mod.load()
        key = settings_mod.require_position_key(cfg, "the dispatcher")
    except settings_mod.SettingsError as e:
        sys.exit(f"dispatcher: {e}")
    logging.config.dictConfig(logs.config("dispatcher", cfg.log_level or "WARNING"))
    if cfg.dispatcher_metrics_port:
        start_http_server(cfg.dispatcher_metrics_port, addr="127.0.0.1")
    sys.exit(asyncio.run(_main(cfg, key)))
