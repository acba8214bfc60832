"""Appending to Kafka with librdkafka (confluent-kafka) from asyncio: an idempotent producer (`acks=all`),
Kafka's default placement (`murmur2_random`: murmur2 of the key, as the contract's placement rule says), and
a future per record that resolves to its (partition, offset).

librdkafka does the protocol in C threads of its own; its delivery reports are served by `poll()`, which a
thread of ours calls in a loop (it releases the GIL while it waits). Reports are handed to the event loop in
bursts: one wake-up of the loop per `poll()` that served any, however many records it acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from typing import Any

import confluent_kafka

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
QUEUE_MESSAGES_MAX = 100_000  # librdkafka's own bound on records produced and not yet acknowledged


class ProduceFailed(Exception):
    """Kafka did not acknowledge a record: `retriable` says whether the same record may be tried again, and
    `fatal` that this producer can no longer be used (a new one must replace it)."""

    def __init__(self, message: str, retriable: bool = True, fatal: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.fatal = fatal


def producer_config(bootstrap: str, *, delivery_timeout_ms: int, linger_ms: float = 0, client_id: str = "ledger",
                    **extra: Any) -> dict[str, Any]:
    """The settings every producer of the project uses: idempotent, every in-sync replica acknowledges."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,  # implies acks=all, retries, and at most 5 requests in flight, in order
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": linger_ms,
        "message.timeout.ms": delivery_timeout_ms,
        "request.timeout.ms": min(delivery_timeout_ms, 30_000),
        "queue.buffering.max.messages": QUEUE_MESSAGES_MAX,
        "socket.keepalive.enable": True,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 30_000,
        **extra,
    }


class LogProducer:
    """One librdkafka producer and the thread that serves its delivery reports to the running event loop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = confluent_kafka.Producer({**config, "error_cb": self._on_error})
        self._reports: collections.deque[tuple[asyncio.Future[tuple[int, int | None]], Any, Any]] = collections.deque()
        self._stopping = threading.Event()
        self.fatal: str | None = None  # set once librdkafka says the producer is unusable
        self._thread = threading.Thread(target=self._serve, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
             headers: list[tuple[str, str | bytes | None]] | None = None) -> asyncio.Future[tuple[int, int | None]]:
        """Hand `value` to librdkafka; the future resolves to (partition, offset) once the broker has it (offset
        None when the broker acknowledged a retry of a record it already had, without saying where), or
        raises `ProduceFailed`. Raises `ProduceFailed` at once when librdkafka's queue is full."""
        if self.fatal is not None:
            raise ProduceFailed(f"the producer failed for good: {self.fatal}", fatal=True)
        future: asyncio.Future[tuple[int, int | None]] = self._loop.create_future()

        def delivered(error: Any, message: Any) -> None:  # in the poll thread
            self._reports.append((future, error, message))

        try:
            if partition is None:
                self._producer.produce(topic, value, key, on_delivery=delivered, headers=headers)
            else:
                self._producer.produce(topic, value, key, partition=partition, on_delivery=delivered, headers=headers)
        except BufferError:
            raise ProduceFailed(f"over {QUEUE_MESSAGES_MAX} records wait for Kafka's acknowledgement") from None
        except confluent_kafka.KafkaException as e:
            raise _failure(e.args[0]) from e
        return future

    async def partition_count(self, topic: str, timeout_s: float = 5.0) -> int:
        """How many partitions `topic` has, from the cluster's metadata; `ProduceFailed` if it cannot tell."""
        def ask() -> int:
            try:
                found = self._producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            except confluent_kafka.KafkaException as e:
                raise _failure(e.args[0]) from e
            if found is None or found.error is not None or not found.partitions:
                raise ProduceFailed(f"no partitions known for {topic}: {None if found is None else found.error}")
            return len(found.partitions)
        return await asyncio.to_thread(ask)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(POLL_INTERVAL_S)
            if self._reports:
                try:
                    self._loop.call_soon_threadsafe(self._resolve)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _resolve(self) -> None:
        while self._reports:
            future, error, message = self._reports.popleft()
            if future.done():  # its waiter gave up (a timeout, a cancelled request)
                continue
            if error is not None:
                future.set_exception(_failure(error))
            else:
                offset = message.offset()
                # Acknowledged without an offset: librdkafka's answer to a retried batch the broker already has
                # (DUPLICATE_SEQUENCE_NUMBER after a leader change). The record is on the log; where is unknown.
                future.set_result((message.partition(), offset if offset is not None and offset >= 0 else None))

    def _on_error(self, error: Any) -> None:  # in the poll thread
        if error.fatal():
            self.fatal = error.str()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Wait up to `timeout_s` for what is in flight, then stop serving reports."""
        await asyncio.to_thread(self._producer.flush, timeout_s)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, timeout_s)
        self._resolve()


def _failure(error: Any) -> ProduceFailed:
    return ProduceFailed(error.str(), retriable=not error.fatal(), fatal=error.fatal())


class RenewingProducer:
    """A `LogProducer` made on first use and made anew only when librdkafka declared it unusable (a fatal error,
    such as an idempotence sequence it cannot recover): the one holder of the API's appender and the
    projector's outcomes. The old one is stopped in the background, its reports still served meanwhile."""

    def __init__(self, config: dict[str, Any], name: str, stop_timeout_s: float) -> None:
        self.config = config
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self.producer: LogProducer | None = None
        self._retired: set[asyncio.Task[None]] = set()

    def current(self) -> LogProducer:
        producer = self.producer
        if producer is not None and producer.fatal is None:
            return producer
        if producer is not None:
            log.error("the %s producer failed for good (%s); replacing it", self.name, producer.fatal)
            task = asyncio.create_task(producer.stop(self.stop_timeout_s))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        self.producer = LogProducer(self.config)
        return self.producer

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        for task in list(self._retired):
            with contextlib.suppress(Exception):
                await task
