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
import signal
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from api import views
from api.routes.common import balances_after_of, balances_of, transaction_body
from api.store import Store, init_connection, keep_session
from dispatch.events import CROSSED, HOLD_EVENTS, Event, events_of, wanted
from dispatch.net import DeliveryError, UrlNotAllowed, parse_url, post, resolve
from dispatch.signing import sign
from infra import logs
from infra import settings as settings_mod
from infra.kafka import PacedCommits
from infra.retry import Backoff
from infra.settings import Settings
from ledger.chain import CHAINED_KINDS
from ledger.positions import PositionKey

log = logging.getLogger("ledger.dispatcher")

FETCH_RECORDS_MAX = 1000
FETCH_WAIT_MS = 100
# Kafka answers the dispatcher's fetch once this much has gathered, or after `FETCH_WAIT_MS`: a few fetches a
# second under load, not one per batch the projector applies (each woke the broker and this process). Webhooks
# have no latency promise; at most `FETCH_WAIT_MS` is added to a delivery.
FETCH_MIN_BYTES = 64 * 1024
# A delivery's lease: taken when it is queued and renewed when a worker takes it up, longer than one attempt
# (a lookup, 5 s to connect, 10 s for the answer); past it another process may claim it.
LEASE_S = 60
POLL_INTERVAL_S = 0.5
CLAIM_PER_ENDPOINT = 250  # claimed per endpoint per poll: one endpoint's backlog does not hold back another's
QUEUE_MAX = 1000  # deliveries waiting per endpoint in this process; past it they wait in PostgreSQL
BATCH_PER_SENDER = 4  # a runner takes up to this many deliveries per sender the endpoint may run at once
RUNNERS_PER_ENDPOINT = 4  # batches of one endpoint in progress at once: one's round trips overlap another's sends
# A failed delivery is retried 5 s after, doubling up to an hour, with jitter (the first retry within 10 s, as
# the contract says; a crowd of failures spreads out).
RETRY = Backoff(first_s=5.0, cap_s=3600.0, jitter=True)
GIVE_UP_AFTER = timedelta(hours=24)
NOT_READY_RETRY_S = 0.5  # the decision is published before its batch commits: its rows may not be there yet
PROJECTED_WAIT_S = 5.0  # how long the consumer waits for the projection to commit the decisions it read
PROJECTED_POLL_S = 0.01
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
# A batch taken up by its endpoint's runner: the leases renewed, where this process still holds them and the
# delivery is still pending; with their events, in the same round trip.
RENEW = """
UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $3)
FROM webhook_events e
WHERE d.event_id = ANY($1::text[]) AND d.webhook_id = $2 AND d.state = 'pending' AND d.leased_by = $4
  AND e.id = d.event_id
RETURNING d.attempts, d.give_up_at, e.id, e.tenant, e.type, e.subject, e.position, e.occurred_at, e.crossing, e.body
"""
STORE_BODIES = """
UPDATE webhook_events e SET body = k.body FROM unnest($1::text[], $2::bytea[]) AS k(id, body)
WHERE e.id = k.id AND e.body IS NULL
RETURNING e.id
"""
# A batch's outcomes: an attempt recorded where one was made (`attempt` > 0), and each delivery closed
# (delivered, failed, cancelled) or due again after `delay` s (pending, the lease let go); only by the lease's
# holder, in one round trip.
RECORD = """
WITH k AS (SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::text[], $6::float8[])
           AS k(event_id, attempt, status, error, state, delay)),
attempt AS (INSERT INTO webhook_attempts (tenant, webhook_id, event_id, attempt, status_code, error)
            SELECT $7, $8, event_id, attempt, status, error FROM k WHERE attempt > 0)
UPDATE webhook_deliveries d SET state = k.state, attempts = greatest(k.attempt, d.attempts),
    next_at = now() + make_interval(secs => k.delay),
    leased_by = CASE WHEN k.state = 'pending' THEN NULL ELSE d.leased_by END,
    delivered_at = CASE WHEN k.state = 'delivered' THEN now() END
FROM k WHERE d.event_id = k.event_id AND d.webhook_id = $8 AND d.state = 'pending' AND d.leased_by = $9
"""
# Deliveries this process could not queue (their endpoint's queue full): their lease let go, due now.
RELEASE = """
UPDATE webhook_deliveries SET leased_by = NULL, next_at = now()
FROM unnest($1::text[], $2::text[]) AS k(event_id, webhook_id)
WHERE webhook_deliveries.event_id = k.event_id AND webhook_deliveries.webhook_id = k.webhook_id
  AND state = 'pending' AND leased_by = $3
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


class Directory:
    """The active endpoints, from PostgreSQL. Reloaded when the latest registration or deletion (`changed_at`)
    is newer than the one this view has: a cheap probe of an index per batch of decisions, the whole list only
    when something changed."""

    def __init__(self) -> None:
        self.by_tenant: dict[str, list[Webhook]] = {}
        self.by_id: dict[tuple[str, str], Webhook] = {}
        self.changed_at: datetime | None = None
        self.loaded = False
        self.lock = asyncio.Lock()  # one load at a time: an older snapshot never lands after a newer one

    async def refresh(self, conn: asyncpg.Connection, force: bool = False) -> None:
        async with self.lock:
            changed = await conn.fetchval(LAST_CHANGE)
            if changed == self.changed_at and self.loaded and not force:
                return  # with no endpoint ever registered, None: it was reloaded on every batch
            rows = await conn.fetch(ACTIVE_WEBHOOKS)
            by_tenant: dict[str, list[Webhook]] = {}
            for r in rows:
                hook = Webhook(r["tenant"], r["id"], r["url"], frozenset(r["events"]), r["secret"], r["created_at"])
                by_tenant.setdefault(hook.tenant, []).append(hook)
            self.by_tenant, self.changed_at, self.loaded = by_tenant, changed, True
            self.by_id = {(h.tenant, h.id): h for hooks in by_tenant.values() for h in hooks}

    def subscribed(self, event: Event, at: datetime) -> list[Webhook]:
        """The endpoints that take `event`: subscribed to its type, and registered by the time it happened."""
        return [h for h in self.by_tenant.get(event.tenant, ()) if h.created_at <= at and wanted(h.events, event.type)]


class Endpoint:
    """One endpoint's queue and its runners in this process: started as deliveries arrive (a few, when they
    come faster than one batch at a time), gone when the queue is empty (an endpoint with nothing to send costs
    nothing). Its requests in flight are bounded whatever the runners."""

    def __init__(self, senders: int) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_MAX)
        self.runners: set[asyncio.Task[None]] = set()
        self.senders = asyncio.Semaphore(senders)  # requests to it in flight, whatever the batch
        self.overflowed = False  # some of its deliveries wait in PostgreSQL for room here


class Outcome(NamedTuple):
    """What became of one delivery of a batch: the attempt made (0: none), and its state after."""

    event_id: str
    attempt: int
    status: int | None
    error: str | None
    state: str
    delay_s: float


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
        self.room = asyncio.Event()  # an endpoint's queue has room again: worth a poll now
        self.stopping = asyncio.Event()
        # Kafka's offsets of what is stored, at most once a second: a restart consumes again what followed, and
        # storing it again changes nothing (events and deliveries are inserted once per id). A commit per fetch
        # cost a Kafka round trip for every batch the projector applied.
        self.commits: PacedCommits | None = None
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
                                              reset=keep_session, server_settings=settings)
        api_pool = await asyncpg.create_pool(self.cfg.api_database_url, min_size=1, max_size=4, timeout=5,
                                             init=init_connection, reset=keep_session, server_settings=settings)
        self.store = Store(api_pool, acquire_timeout_s=5.0)
        consumer = AIOKafkaConsumer(self.cfg.outcomes_topic, bootstrap_servers=self.cfg.kafka_bootstrap,
                                    group_id=self.cfg.dispatcher_group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", max_poll_records=FETCH_RECORDS_MAX,
                                    fetch_min_bytes=FETCH_MIN_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS,
                                    session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
        self.commits = PacedCommits(consumer)
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
            for task in tasks + [r for e in self.endpoints.values() for r in list(e.runners)]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.commits is not None:  # what was stored since the last commit (a restart would redo it)
                with contextlib.suppress(Exception):
                    await self.commits.commit(force=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.pool.close()
            await api_pool.close()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Decisions in, events and deliveries stored, then the offsets committed; new deliveries go straight
        to their endpoints' queues (their lease is this process's)."""
        assert self.pool is not None and self.commits is not None
        while not self.stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=FETCH_RECORDS_MAX)
            messages = [m for batch in fetched.values() for m in batch]
            if not messages:
                await self.commits.commit()  # what the last batches stored, once the log goes quiet
                continue
            CONSUMED.inc(len(messages))
            async with self.pool.acquire() as conn:
                await self.directory.refresh(conn)  # an endpoint registered since may take some of these
                found: list[tuple[Event, datetime, list[Webhook]]] = []
                wanted: dict[int, int] = {}  # per partition of the log, the last decision an event is of
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
                            partition, _, offset = str(outcome.get("record", "")).partition("-")
                            if partition.isdigit() and offset.isdigit():
                                wanted[int(partition)] = max(wanted.get(int(partition), -1), int(offset))
                if wanted:
                    await self._projected(conn, wanted)
                fresh = await self._store(conn, found) if found else []
            self.commits.done({TopicPartition(m.topic, m.partition): m.offset + 1 for m in messages})
            await self.commits.commit()
            await self._queue(fresh)

    async def _projected(self, conn: asyncpg.Connection, wanted: dict[int, int]) -> None:
        """Wait (a little) until the projection has committed the decisions `wanted` (per partition, the last
        offset): each is published just before its batch commits, and a delivery goes out with its transaction
        as a GET shows it. Past the wait it goes on: a delivery whose data is not there yet is put back."""
        deadline = time.monotonic() + PROJECTED_WAIT_S
        while time.monotonic() < deadline:
            done = {r["log_partition"]: r["next_offset"] for r in await conn.fetch("SELECT * FROM api_offsets()")}
            if all(done.get(p, 0) > offset for p, offset in wanted.items()):
                return
            await asyncio.sleep(PROJECTED_POLL_S)

    async def _store(self, conn: asyncpg.Connection, found: list[tuple[Event, datetime, list[Webhook]]]
                     ) -> list[asyncpg.Record]:
        give_up = datetime.now(UTC) + GIVE_UP_AFTER
        async with conn.transaction():
            await conn.execute(INSERT_EVENTS, [e.id for e, _, _ in found], [e.tenant for e, _, _ in found],
                               [e.type for e, _, _ in found], [e.subject for e, _, _ in found],
                               [e.position for e, _, _ in found], [at for _, at, _ in found],
                               [None if e.crossing is None else orjson.dumps(e.crossing).decode()
                                for e, _, _ in found])
            pairs = [(e, h) for e, _, hooks in found for h in hooks]
            rows: list[asyncpg.Record] = await conn.fetch(
                INSERT_DELIVERIES, [e.id for e, _ in pairs], [h.id for _, h in pairs], [e.tenant for e, _ in pairs],
                float(LEASE_S), [give_up] * len(pairs), self.me)
        for event, _, _ in found:
            EVENTS.labels(event.type).inc()
        return rows

    async def _poll(self) -> None:
        """Claim the deliveries that are due (retries, and those a stopped process left) and queue them."""
        assert self.pool is not None
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):  # a runner that emptied its queue asks for more at once
                await asyncio.wait_for(self.room.wait(), POLL_INTERVAL_S)
            self.room.clear()
            full = [key[1] for key, e in self.endpoints.items() if e.queue.qsize() > QUEUE_MAX - CLAIM_PER_ENDPOINT]
            try:
                async with self.pool.acquire() as conn:
                    await self.directory.refresh(conn)
                    rows = await conn.fetch(CLAIM_DUE, float(LEASE_S), CLAIM_PER_ENDPOINT, self.me, full)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("could not claim due deliveries (%r)", e)
                continue
            await self._queue(rows)

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

    async def _queue(self, leased: list[asyncpg.Record]) -> None:
        """Queue deliveries this process just leased (stored, or claimed); the lease of each that finds its
        endpoint's queue full is let go at once, so a poll claims it as soon as there is room."""
        assert self.pool is not None
        deliveries = [Delivery(r["event_id"], r["webhook_id"], r["tenant"], r["attempts"], r["give_up_at"])
                      for r in leased]
        overflow = [d for d in deliveries if not self._enqueue(d)]
        if overflow:
            await self.pool.execute(RELEASE, [d.event_id for d in overflow], [d.webhook_id for d in overflow],
                                    self.me)

    def _enqueue(self, delivery: Delivery) -> bool:
        """Queue a delivery this process holds the lease of; False when its endpoint's queue is full."""
        mark = (delivery.event_id, delivery.webhook_id)
        if mark in self.queued:
            return True
        key = (delivery.tenant, delivery.webhook_id)
        endpoint = self.endpoints.get(key)
        if endpoint is None:
            endpoint = self.endpoints[key] = Endpoint(self.cfg.deliveries_per_endpoint)
        try:
            endpoint.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            endpoint.overflowed = True
            return False
        self.queued.add(mark)
        running = sum(1 for r in endpoint.runners if not r.done())
        batch = self.cfg.deliveries_per_endpoint * BATCH_PER_SENDER
        if running == 0 or (running < RUNNERS_PER_ENDPOINT and endpoint.queue.qsize() > running * batch):
            runner = asyncio.create_task(self._run(key, endpoint))
            endpoint.runners.add(runner)
            runner.add_done_callback(endpoint.runners.discard)
        return True

    async def _run(self, key: tuple[str, str], endpoint: Endpoint) -> None:
        """Deliver what the endpoint's queue holds, a batch at a time: one round trip renews a batch's leases
        and reads its events, one reads the data of those not built yet, one records every attempt."""
        size = self.cfg.deliveries_per_endpoint * BATCH_PER_SENDER
        while not endpoint.queue.empty():
            batch = [endpoint.queue.get_nowait() for _ in range(min(size, endpoint.queue.qsize()))]
            try:
                await self._deliver(key, endpoint, batch)
            except Exception:  # a batch's fault (the database away) ends no runner: the leases bring it back
                log.warning("a batch of deliveries failed unexpectedly", exc_info=True)
            finally:
                for delivery in batch:
                    self.queued.discard((delivery.event_id, delivery.webhook_id))
            if endpoint.overflowed and endpoint.queue.qsize() < QUEUE_MAX // 2:
                endpoint.overflowed = False
                self.room.set()  # what waits in PostgreSQL is claimed now, not at the next poll
        others = sum(1 for r in endpoint.runners if not r.done() and r is not asyncio.current_task())
        if self.endpoints.get(key) is endpoint and endpoint.queue.empty() and not others:
            del self.endpoints[key]

    async def _deliver(self, key: tuple[str, str], endpoint: Endpoint, batch: list[Delivery]) -> None:
        assert self.pool is not None
        tenant, webhook_id = key
        events = await self.pool.fetch(RENEW, [d.event_id for d in batch], webhook_id, float(LEASE_S), self.me)
        if not events:  # delivered, cancelled, or claimed by another process since they were queued here
            return
        hook = await self._webhook(tenant, webhook_id)
        if hook is None:
            await self._record(key, [Outcome(e["id"], 0, None, None, "cancelled", 0.0) for e in events])
            DELIVERIES.labels("cancelled").inc(len(events))
            return
        bodies = await self._bodies(tenant, events)
        waiting = [Outcome(e["id"], 0, None, None, "pending", NOT_READY_RETRY_S) for e in events
                   if bodies.get(e["id"]) is None]  # their decisions' rows are not committed yet: no attempt
        ready = [e for e in events if bodies.get(e["id"]) is not None]
        addresses: list[str] | None = None
        refused: str | None = None
        target = None
        try:
            target = parse_url(hook.url)
            async with self.resolving.setdefault(tenant, asyncio.Semaphore(RESOLVES_PER_TENANT)):
                addresses = await resolve(target, self.cfg.webhook_allow_hosts, CONNECT_TIMEOUT_S)
        except UrlNotAllowed as e:
            log.info("webhook address refused", extra={"tenant": tenant, "reason": e.message})
            refused = "url_not_allowed: the host must resolve only to public addresses"
        async def one(event: asyncpg.Record) -> Outcome:
            body = bodies[event["id"]]
            assert body is not None
            problem, status = refused, None
            if problem is None:
                assert target is not None and addresses is not None
                async with endpoint.senders, self.in_flight:
                    try:
                        answer = await post(target, addresses, body, {
                            "Ledger-Event-Id": event["id"],
                            "Ledger-Signature": sign(hook.secret, body, int(time.time()))},
                            CONNECT_TIMEOUT_S, ANSWER_TIMEOUT_S, ANSWER_CAP)
                        status = answer.status
                        problem = None if 200 <= status < 300 else f"answered {status}"
                    except DeliveryError as e:
                        problem = e.message
            return self._judged(event, status, problem)

        outcomes = await asyncio.gather(*(one(e) for e in ready))
        await self._record(key, [*waiting, *outcomes])

    def _judged(self, event: asyncpg.Record, status: int | None, problem: str | None) -> Outcome:
        attempt = event["attempts"] + 1
        if problem is None:
            DELIVERIES.labels("delivered").inc()
            LATENCY.observe(max(0.0, (datetime.now(UTC) - event["occurred_at"]).total_seconds()))
            return Outcome(event["id"], attempt, status, None, "delivered", 0.0)
        DELIVERIES.labels("refused" if problem.startswith("url_not_allowed") else "failed").inc()
        error = problem[:ERROR_LEN_MAX]
        if datetime.now(UTC) >= event["give_up_at"]:
            DELIVERIES.labels("gave_up").inc()
            return Outcome(event["id"], attempt, status, error, "failed", 0.0)
        return Outcome(event["id"], attempt, status, error, "pending", RETRY.delay(attempt))

    async def _record(self, key: tuple[str, str], outcomes: list[Outcome]) -> None:
        assert self.pool is not None
        if outcomes:
            await self.pool.execute(RECORD, [o.event_id for o in outcomes], [o.attempt for o in outcomes],
                                    [o.status for o in outcomes], [o.error for o in outcomes],
                                    [o.state for o in outcomes], [o.delay_s for o in outcomes], key[0], key[1],
                                    self.me)

    async def _webhook(self, tenant: str, webhook_id: str) -> Webhook | None:
        """The endpoint, from this process's view; one it does not know is looked up again before its deliveries
        are cancelled (a view a second old may not have it yet)."""
        assert self.pool is not None
        hook = self.directory.by_id.get((tenant, webhook_id))
        if hook is None:
            async with self.pool.acquire() as conn:
                await self.directory.refresh(conn, force=True)
            hook = self.directory.by_id.get((tenant, webhook_id))
        return hook

    async def _bodies(self, tenant: str, events: list[asyncpg.Record]) -> dict[str, bytes | None]:
        """What every attempt of each event sends: built once (a retry's signature covers the same bytes), from
        its transaction or hold as their GET shows them; None while they are not committed yet."""
        assert self.pool is not None
        bodies: dict[str, bytes | None] = {e["id"]: bytes(e["body"]) for e in events if e["body"] is not None}
        unbuilt = [e for e in events if e["body"] is None]
        if not unbuilt:
            return bodies
        data = await self._data(tenant, unbuilt)
        built = {e["id"]: orjson.dumps({"id": e["id"], "type": e["type"], "tenant": e["tenant"],
                                        "position": e["position"], "created_at": views.timestamp(e["occurred_at"]),
                                        "data": data[e["id"]]})
                 for e in unbuilt if data.get(e["id"]) is not None}
        bodies.update(built)
        for e in unbuilt:
            bodies.setdefault(e["id"], None)
        if built:
            ids = list(built)
            stored = {r["id"] for r in await self.pool.fetch(STORE_BODIES, ids, [bodies[i] for i in ids])}
            lost = [i for i in ids if i not in stored]
            if lost:  # another process built them first: send the same bytes
                for r in await self.pool.fetch("SELECT id, body FROM webhook_events WHERE id = ANY($1)", lost):
                    bodies[r["id"]] = bytes(r["body"])
        return bodies

    async def _data(self, tenant: str, events: list[asyncpg.Record]) -> dict[str, dict[str, Any] | None]:
        """Each event's data, as the API's GET shows it, for one tenant's events, in a few round trips."""
        assert self.store is not None
        data: dict[str, dict[str, Any] | None] = {}
        for e in events:
            if e["type"] == CROSSED:
                data[e["id"]] = orjson.loads(e["crossing"])
        others = [e for e in events if e["type"] != CROSSED]
        if not others:
            return data
        rows = {r["asked"]: r for r in await self.store.transactions_many(tenant, list({e["subject"] for e in others}))}
        holds_of: dict[str, str | None] = {}  # event id -> the hold it shows
        for e in others:
            if e["type"] in HOLD_EVENTS:
                row = rows.get(e["subject"])
                closing = e["type"] in ("hold.captured", "hold.voided")
                holds_of[e["id"]] = (row["target"] if row is not None else None) if closing else e["subject"]
        wanted = sorted({h for h in holds_of.values() if h is not None})
        holds = {r["asked"]: r for r in await self.store.holds_many(tenant, wanted)} if wanted else {}
        shown = [e for e in others if e["type"] not in HOLD_EVENTS and e["subject"] in rows]
        asked = {e["subject"]: balances_after_of(rows[e["subject"]]) for e in shown}
        after_args = [(a[0], a[1], rows[s]["log_offset"]) for s, a in asked.items() if a is not None]
        after: dict[str, list[asyncpg.Record]] = {}
        if after_args:
            for r in await self.store.balances_after_many(tenant, after_args):
                after.setdefault(r["asked"], []).append(r)
        chained = sorted({a[0] for s, a in asked.items() if a is not None and rows[s]["kind"] in CHAINED_KINDS})
        links = {r["asked"]: r for r in await self.store.chain_links_many(tenant, chained)} if chained else {}
        for e in others:
            if e["id"] in holds_of:
                hold = holds.get(holds_of[e["id"]] or "")
                data[e["id"]] = None if hold is None else views.hold(hold, self.positions, tenant)
            elif e["subject"] in rows:
                row, a = rows[e["subject"]], asked.get(e["subject"])
                original = a[0] if a is not None else None
                data[e["id"]] = transaction_body(row, self.positions, tenant,
                                                 balances_of(after.get(original or "", [])), links.get(original or ""))
            else:
                data[e["id"]] = None
        return data


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
        start_http_server(cfg.dispatcher_metrics_port, addr=cfg.metrics_host)
    sys.exit(asyncio.run(_main(cfg, key)))
