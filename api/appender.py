"""Appending requests to `ledger.transactions`: an idempotent producer, key = tenant, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from api.log_ends import LogEnds
from infra.kafka import end_offsets
from ledger.codec import encode_request
from ledger.errors import Unavailable
from ledger.positions import Position
from ledger.requests import Request

log = logging.getLogger("ledger.api")

APPEND_TIMEOUT_S = 3.0
START_RETRY_S = 1.0
# No append acknowledged for this long, every attempt failing: the producer is replaced. aiokafka's producer can
# stay wedged after a broker restart under load (the nemesis found appends failing two minutes after the
# broker was back), and a fresh one connects at once.
RENEW_AFTER_S = 10.0


class AppendUnconfirmed(Unavailable):
    """Kafka did not acknowledge in time. The request may still be appended (the producer retries), so the
    client is told its id: it can look it up, or retry with the same Idempotency-Key."""

    code = "append_unconfirmed"

    def __init__(self, transaction_id: str) -> None:
        super().__init__("the log (Kafka) did not acknowledge the request in time; it may still be appended: "
                         "retry with the same Idempotency-Key, or look up the transaction id")
        self.transaction_id = transaction_id


class Appender:
    """The API's producer. Starts in the background, so the API serves reads while Kafka is away."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Task[None] | None = None
        self._watch: AIOKafkaConsumer | None = None  # only for end offsets
        self._watch_lock = asyncio.Lock()
        self.ends = LogEnds(self.log_end)
        self._failing_since: float | None = None
        self._renewing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._starting = asyncio.create_task(self._start())

    async def _start(self) -> None:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all", linger_ms=1,
                request_timeout_ms=int(APPEND_TIMEOUT_S * 1000), retry_backoff_ms=100,
                metadata_max_age_ms=30_000,
            )
            try:
                await producer.start()
                self.producer = producer
                return
            except KafkaError as e:
                log.warning("Kafka not reachable yet (%s); retrying", e)
                await producer.stop()
                await asyncio.sleep(START_RETRY_S)

    async def stop(self) -> None:
        for task in (self._starting, self._renewing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.producer is not None:
            await self.producer.stop()
        if self._watch is not None:
            await self._watch.stop()

    async def append(self, request: Request) -> Position:
        """The position of the appended request; `Unavailable` if Kafka did not acknowledge it in time."""
        if self.producer is None:
            raise Unavailable("the log (Kafka) is not reachable")
        try:
            async with asyncio.timeout(APPEND_TIMEOUT_S):
                sent = await self.producer.send(self.topic, encode_request(request),
                                                key=request.tenant.encode())
                metadata = await sent
        except (KafkaError, TimeoutError) as e:
            self._failed()
            raise AppendUnconfirmed(request.id) from e
        self._failing_since = None
        position = Position(metadata.partition, metadata.offset)
        self.ends.advance(position)
        return position

    async def append_many(self, requests: list[Request]) -> list[Position]:
        """Append `requests` in their order in one round trip (all sent, then all awaited); the positions, or
        `AppendUnconfirmed` naming every id when any one was not acknowledged in time."""
        if self.producer is None:
            raise Unavailable("the log (Kafka) is not reachable")
        try:
            async with asyncio.timeout(APPEND_TIMEOUT_S):
                sent = [await self.producer.send(self.topic, encode_request(r), key=r.tenant.encode())
                        for r in requests]
                acknowledged = await asyncio.gather(*sent)
        except (KafkaError, TimeoutError) as e:
            self._failed()
            raise AppendUnconfirmed(",".join(r.id for r in requests)) from e
        self._failing_since = None
        positions = [Position(m.partition, m.offset) for m in acknowledged]
        for position in positions:
            self.ends.advance(position)
        return positions

    def _failed(self) -> None:
        """An append was not acknowledged; past `RENEW_AFTER_S` of nothing but failures, a new producer."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > RENEW_AFTER_S and self.producer is not None \
                and (self._renewing is None or self._renewing.done()):
            log.warning("no append acknowledged for %.0f s; replacing the Kafka producer", now - self._failing_since)
            self._renewing = asyncio.create_task(self._renew(self.producer))

    async def _renew(self, old: AIOKafkaProducer) -> None:
        self.producer = None  # appends answer 503 at once meanwhile
        self._failing_since = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(APPEND_TIMEOUT_S):
                await old.stop()
        await self._start()

    async def log_end(self) -> dict[int, int] | None:
        """The next offset of each partition of the log, or None if Kafka does not answer within a second."""
        if self.producer is None:
            return None
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
