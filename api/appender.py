"""Appending requests to `ledger.transactions`: an idempotent librdkafka producer, key = tenant, bounded waits."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from api import tally
from api.log_ends import LogEnds
from infra.kafka import end_offsets
from infra.producer import LogProducer, ProduceFailed, RenewingProducer, producer_config
from ledger.batch import ANSWER_HEADER
from ledger.codec import encode_request
from ledger.errors import AppendUnconfirmed, Unavailable
from ledger.positions import Position
from ledger.requests import BatchRequest, TenantRequest, TransactionRequest

log = logging.getLogger("ledger.api")

APPEND_TIMEOUT_S = 3.0
# librdkafka gives up on a record after this long (message.timeout.ms); the wait here is a little longer, so
# the producer's own verdict is the one a request gets.
DELIVERY_TIMEOUT_MS = int(APPEND_TIMEOUT_S * 1000)
WAIT_MARGIN_S = 0.5
OWN_PENDING_MAX = 100_000  # own appends remembered per partition (past it the oldest are forgotten)
WAITING_SCAN_MAX = 1_000  # own appends still waiting looked at, in all, for who waits (`Appender.waiting`)
# Put on a waited append: the projector sends its answer with the batch's notification (`ledger.shown`).
ASK_ANSWER: list[tuple[str, str | bytes | None]] = [(ANSWER_HEADER, b"1")]


# What the API appends: a tenant's request (never the clock's tick, which the projector writes).
Appended = TransactionRequest | TenantRequest | BatchRequest


class Appender:
    """The API's producer: librdkafka connects (and reconnects) in the background, so the API serves reads while
    Kafka is away, and appends answer 503 `append_unconfirmed` until it is back."""

    def __init__(self, bootstrap: str, topic: str, linger_us: int = 0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.linger_us = linger_us
        self.holder: RenewingProducer | None = None
        self._watch: AIOKafkaConsumer | None = None  # only for end offsets
        self._watch_lock = asyncio.Lock()
        self.ends = LogEnds(self.log_end)
        # This process's own appends, per partition, oldest first (bounded), each with when it was sent and
        # whose it is: what the projection owes it, since when, and to whom.
        self.own: dict[int, collections.deque[tuple[int, float, str, bool]]] = {}
        # Of those, per tenant, the ones nobody waits on (`waited` false): its backlog on the log, as this
        # process sees it. Waited ones are bounded by the waiters' own limits and the clients' connections.
        self.unapplied: dict[str, int] = {}

    def start(self) -> None:
        # With linger.ms 0 librdkafka sends each record in a request of its own: under 64 connections of waited
        # writes its broker thread took 61-70 CPU-µs a write and Kafka 107-188; gathering for 0.5 ms, 21-27 and
        # 72-105, for ~0.3 ms more on a lone append (docs/performance.md).
        self.holder = RenewingProducer(producer_config(self.bootstrap, delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                                                       client_id="ledger-api", linger_ms=self.linger_us / 1000),
                                       "API's", APPEND_TIMEOUT_S)
        self.holder.current()  # librdkafka connects in the background from now on

    async def stop(self) -> None:
        if self.holder is not None:
            await self.holder.stop()
        if self._watch is not None:
            await self._watch.stop()

    def _producer(self) -> LogProducer:
        """The live producer (`RenewingProducer`: replaced first if librdkafka declared it unusable)."""
        if self.holder is None:
            raise Unavailable("the log (Kafka) is not reachable")
        return self.holder.current()

    async def append(self, request: Appended, waited: bool = False) -> Position:
        """The position of the appended request; `AppendUnconfirmed` if Kafka did not acknowledge it in time.
        `waited`: its client waits for it to be applied (it then does not count in the tenant's backlog)."""
        producer = self._producer()
        started = time.monotonic()
        try:
            async with asyncio.timeout(APPEND_TIMEOUT_S + WAIT_MARGIN_S):
                acknowledged = await producer.send(self.topic, encode_request(request), request.tenant.encode(),
                                                   headers=ASK_ANSWER if waited else None)
        except (ProduceFailed, TimeoutError) as e:
            raise AppendUnconfirmed(request.tenant, request.id) from e
        (position,) = await self._placed([acknowledged], request.tenant, request.id)
        self.ends.advance(position)
        self._own(position, request.tenant, waited, started)
        return position

    async def append_many(self, requests: list[TransactionRequest], waited: bool = False) -> list[Position]:
        """Append `requests` in their order in one round trip (all sent, then all awaited); the positions, or
        `AppendUnconfirmed` naming every id when any one was not acknowledged in time."""
        producer = self._producer()
        started = time.monotonic()
        sent: list[asyncio.Future[tuple[int, int | None]]] = []
        try:
            async with asyncio.timeout(APPEND_TIMEOUT_S + WAIT_MARGIN_S):
                sent = [producer.send(self.topic, encode_request(r), r.tenant.encode()) for r in requests]
                acknowledged = await asyncio.gather(*sent)
        except (ProduceFailed, TimeoutError) as e:
            for future in sent:  # their reports are still served; nobody reads them
                future.cancel()
            raise AppendUnconfirmed(requests[0].tenant, ",".join(r.id for r in requests)) from e
        positions = await self._placed(acknowledged, requests[0].tenant, ",".join(r.id for r in requests))
        for request, position in zip(requests, positions, strict=True):
            self.ends.advance(position)
            self._own(position, request.tenant, waited, started)
        return positions

    async def _placed(self, acknowledged: list[tuple[int, int | None]], tenant: str, ids: str) -> list[Position]:
        """The positions of acknowledged records. One acknowledged without an offset (a retry the broker already
        had) is on the log below the partition's end, read now: that end less one is a position at or past it,
        so a client that waits for it (or reads with it as `min_position`) sees the request decided."""
        if all(offset is not None for _, offset in acknowledged):
            return [Position(p, o) for p, o in acknowledged if o is not None]
        ends = await self.log_end()
        if ends is None:
            raise AppendUnconfirmed(tenant, ids)
        log.warning("Kafka acknowledged %s without an offset (a retried batch it already had); placed at the "
                    "log's end", ids)
        return [Position(p, o if o is not None else ends[p] - 1) for p, o in acknowledged]

    def backlogged(self, more_than: int) -> frozenset[str]:
        """The tenants with more than `more_than` of this process's appends not yet applied that nobody waits
        on (as of the last `waiting`, which forgets the applied ones)."""
        return frozenset(tenant for tenant, count in self.unapplied.items() if count > more_than)

    def _own(self, position: Position, tenant: str, waited: bool = False, since: float | None = None) -> None:
        """Remember an append of `tenant`, waiting to be applied `since` it was sent (a slow acknowledgement by
        Kafka is part of what its client waits: under a flood it took 23 ms of the victim's first writes)."""
        offsets = self.own.setdefault(position.partition, collections.deque())
        if len(offsets) >= OWN_PENDING_MAX:
            _, _, gone, gone_waited = offsets.popleft()
            if not gone_waited:
                tally.leave(self.unapplied, gone)
        offsets.append((position.offset, time.monotonic() if since is None else since, tenant, waited))
        if not waited:
            tally.enter(self.unapplied, tenant)

    def waiting(self, applied: dict[int, int], now: float, longer_than_s: float, pending: bool = True) -> set[str]:
        """The tenants of this process's appends that waited more than `longer_than_s` to be applied: those
        applied since the last call that had waited that long by now, and (with `pending`) those not applied yet
        that have (`applied`: the next offset of each partition the projection applies). Appends applied are
        forgotten, each looked at once. Of those still waiting, the oldest of each partition are looked at, at
        most `WAITING_SCAN_MAX` in all (each partition its share), and no more once two tenants are found: all
        that fair admission asks is whether a tenant other than a given one waits, and a projector that is down
        (everything waits) must not cost the API a scan of its backlog every few milliseconds."""
        tenants = set()
        for partition, offsets in self.own.items():
            done = applied.get(partition, 0)
            while offsets and offsets[0][0] < done:
                _, at, tenant, waited = offsets.popleft()
                if not waited:
                    tally.leave(self.unapplied, tenant)
                if now - at > longer_than_s:
                    tenants.add(tenant)
        if not pending:
            return tenants
        share = max(1, WAITING_SCAN_MAX // max(1, len(self.own)))  # each partition its share of the scan
        for offsets in self.own.values():
            for _, (_, at, tenant, _) in zip(range(share), offsets, strict=False):
                if len(tenants) >= 2 or now - at <= longer_than_s:
                    break
                tenants.add(tenant)
            if len(tenants) >= 2:
                break
        return tenants

    async def log_end(self) -> dict[int, int] | None:
        """The next offset of each partition of the log, or None if Kafka does not answer within a second."""
        try:
            async with asyncio.timeout(1.0):
                ends = await end_offsets(await self._watching(), self.topic)
        except (KafkaError, TimeoutError):
            return None
        self.ends.update(ends)
        return ends

    async def _watching(self) -> AIOKafkaConsumer:
        async with self._watch_lock:  # /readyz and the ends' refresh may both be first
            if self._watch is None:
                watch = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
                try:
                    await watch.start()
                except BaseException:
                    await watch.stop()
                    raise
                self._watch = watch
            return self._watch
