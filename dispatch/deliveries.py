"""Deliveries out (`Deliveries`): per endpoint a bounded queue and its runners, each attempt signed, sent, recorded."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson
from prometheus_client import Counter, Histogram

from api import views
from api.routes.common import balances_after_of, balances_of, transaction_body
from api.store import Store
from dispatch.directory import Directory, Webhook
from dispatch.events import CROSSED, HOLD_EVENTS
from dispatch.net import DeliveryError, UrlNotAllowed, parse_url, post, resolve
from dispatch.signing import sign
from dispatch.statements import RECORD, RELEASE, RENEW, STORE_BODIES
from infra.retry import Backoff
from infra.settings import Settings
from ledger.chain import CHAINED_KINDS
from ledger.positions import PositionKey

log = logging.getLogger("ledger.dispatcher")

# A delivery's lease: taken when it is queued and renewed when a worker takes it up, longer than one attempt
# (a lookup, 5 s to connect, 10 s for the answer); past it another process may claim it.
LEASE_S = 60
QUEUE_MAX = 1000  # deliveries waiting per endpoint in this process; past it they wait in PostgreSQL
BATCH_PER_SENDER = 4  # a runner takes up to this many deliveries per sender the endpoint may run at once
RUNNERS_PER_ENDPOINT = 4  # batches of one endpoint in progress at once: one's round trips overlap another's sends
# A failed delivery is retried 5 s after, doubling up to an hour, with jitter (the first retry within 10 s, as
# the contract says; a crowd of failures spreads out).
RETRY = Backoff(first_s=5.0, cap_s=3600.0, jitter=True)
GIVE_UP_AFTER = timedelta(hours=24)
NOT_READY_RETRY_S = 0.5  # the decision is published before its batch commits: its rows may not be there yet
RESOLVES_PER_TENANT = 4  # name lookups of one tenant's endpoints at once (they hold threads of their own)
CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 10.0
ANSWER_CAP = 64 * 1024
ERROR_LEN_MAX = 300

DELIVERIES = Counter("ledger_webhook_deliveries_total", "Delivery attempts by result", ["result"])
LATENCY = Histogram("ledger_webhook_delivery_seconds", "From the decision's publication to its acknowledgement",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400))


class Delivery(NamedTuple):
    event_id: str
    webhook_id: str
    tenant: str
    attempts: int
    give_up_at: datetime


class Endpoint:
    """One endpoint's queue and its runners in this process: started as deliveries arrive (a few, when they
    come faster than one batch at a time), gone when the queue is empty (an endpoint with nothing to send costs
    nothing). Its requests in flight are bounded whatever the runners."""

    def __init__(self, senders: int) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_MAX)
        self.runners: set[asyncio.Task[None]] = set()
        self.senders = asyncio.Semaphore(senders)  # requests to it in flight, whatever the batch
        self.overflowed = False  # some of its deliveries wait in PostgreSQL for room here


class DeliveryResult(NamedTuple):
    """What became of one delivery of a batch: the attempt made (0: none), and its state after."""

    event_id: str
    attempt: int
    status: int | None
    error: str | None
    state: str
    delay_s: float


class Deliveries:
    """What this process delivers: the endpoints' queues and runners, under one bound on all requests in flight;
    `Dispatcher` feeds it the deliveries it stores or claims."""

    def __init__(self, cfg: Settings, key: bytes) -> None:
        self.cfg = cfg
        self.positions = PositionKey(key)
        self.directory = Directory()
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.queued: set[tuple[str, str]] = set()  # (event, webhook) queued or in flight here
        self.in_flight = asyncio.Semaphore(cfg.deliveries_in_flight)
        self.resolving: dict[str, asyncio.Semaphore] = {}  # per tenant
        self.room = asyncio.Event()  # an endpoint's queue has room again: worth a poll now
        self.pool: asyncpg.Pool | None = None
        self.store: Store | None = None  # the API's reads, for an event's data as its GET shows it
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # whose leases

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
            await self._record(key, [DeliveryResult(e["id"], 0, None, None, "cancelled", 0.0) for e in events])
            DELIVERIES.labels("cancelled").inc(len(events))
            return
        bodies = await self._bodies(tenant, events)
        waiting = [DeliveryResult(e["id"], 0, None, None, "pending", NOT_READY_RETRY_S) for e in events
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
        async def one(event: asyncpg.Record) -> DeliveryResult:
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

    def _judged(self, event: asyncpg.Record, status: int | None, problem: str | None) -> DeliveryResult:
        attempt = event["attempts"] + 1
        if problem is None:
            DELIVERIES.labels("delivered").inc()
            LATENCY.observe(max(0.0, (datetime.now(UTC) - event["occurred_at"]).total_seconds()))
            return DeliveryResult(event["id"], attempt, status, None, "delivered", 0.0)
        DELIVERIES.labels("refused" if problem.startswith("url_not_allowed") else "failed").inc()
        error = problem[:ERROR_LEN_MAX]
        if datetime.now(UTC) >= event["give_up_at"]:
            DELIVERIES.labels("gave_up").inc()
            return DeliveryResult(event["id"], attempt, status, error, "failed", 0.0)
        return DeliveryResult(event["id"], attempt, status, error, "pending", RETRY.delay(attempt))

    async def _record(self, key: tuple[str, str], outcomes: list[DeliveryResult]) -> None:
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
