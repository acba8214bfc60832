"""The faust-streaming app: one agent reads `ledger.transactions` in batches and applies them.

Concurrency is 1 per worker: ordering within a partition is the whole point. Several workers in the
consumer group share the partitions; the offsets rows in PostgreSQL keep redeliveries from applying twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from infra import logs
from ledger import settings as settings_mod
from ledger.settings import OUTCOMES_TOPIC, TRANSACTIONS_TOPIC
from projections.batches import Record
from projections.replay import log_end, topic_partitions
from projections.writer import BatchResult, apply_batch

log = logging.getLogger("ledger.projector")

RECONNECT_ATTEMPTS_MAX = 600
# Failures that retrying the same batch on a fresh connection can fix. InternalClientError is what asyncpg
# raises when the server goes away in the middle of a COPY.
TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
             asyncpg.AdminShutdownError, asyncpg.exceptions.InternalClientError, KafkaError, TimeoutError)
EXIT_ON_CRASH = 70
RECONNECT_BACKOFF_S_MAX = 2.0

BATCH_SIZE = Histogram("ledger_projector_batch_size", "Records per batch",
                       buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000))
APPLY_SECONDS = Histogram("ledger_projector_apply_seconds", "Time to apply one batch in PostgreSQL")
OUTCOMES = Counter("ledger_projector_outcomes_total", "Decided requests", ["status", "reason"])
SKIPPED = Counter("ledger_projector_skipped_total", "Redelivered records skipped")
APPLIED = Counter("ledger_projector_applied_total", "Records applied")
LAST_OFFSET = Gauge("ledger_projector_next_offset", "Next offset to apply", ["partition"])
LAG = Gauge("ledger_projector_lag_records", "Records in the log not yet applied", ["partition"])
WATCH: dict[str, Any] = {}

cfg = settings_mod.load()
app = faust.App(
    os.environ.get("LEDGER_PROJECTOR_GROUP", "ledger-projector"),
    broker=f"kafka://{cfg.kafka_bootstrap}",
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,
    topic_disable_leader=True,
    producer_acks=-1,
    stream_wait_empty=False,
    broker_commit_interval=0.5,
    # A dead member's partitions move to a survivor after this, not after faust's 60 s default.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=1.0,
    broker_rebalance_timeout=20.0,
)
transactions = app.topic(TRANSACTIONS_TOPIC, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")


class Projection:
    """The projector's PostgreSQL connection (reopened when it fails, bounded attempts) and its outcomes producer."""

    def __init__(self, url: str, bootstrap: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                         linger_ms=1)
        self.producer_started = False

    async def publish(self, outcomes: list[tuple[int, bytes, bytes]]) -> None:
        """Send a batch's outcomes and wait for Kafka's acknowledgement: one record batch per partition."""
        if not self.producer_started:
            await self.producer.start()
            self.producer_started = True
        partitions = len(await self.producer.partitions_for(OUTCOMES_TOPIC))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for partition, key, value in outcomes:
            by_partition.setdefault(partition % partitions, []).append((key, value))
        sent = []
        for partition, items in by_partition.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    sent.append(await self.producer.send_batch(batch, OUTCOMES_TOPIC, partition=partition))
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            sent.append(await self.producer.send_batch(batch, OUTCOMES_TOPIC, partition=partition))
        await asyncio.gather(*sent)

    async def apply(self, records: list[Record]) -> BatchResult:
        for attempt in range(RECONNECT_ATTEMPTS_MAX):
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.url, timeout=5)
                return await apply_batch(self.conn, records, self.publish)
            except TRANSIENT as e:
                delay = min(RECONNECT_BACKOFF_S_MAX, 0.05 * 2**attempt)
                log.warning("PostgreSQL or Kafka unavailable (%r); retrying batch in %.2f s", e, delay)
                await self._drop()
                await asyncio.sleep(delay)
        raise RuntimeError(f"PostgreSQL unreachable after {RECONNECT_ATTEMPTS_MAX} attempts")

    async def close(self) -> None:
        await self._drop()
        if self.producer_started:
            await self.producer.stop()

    async def _drop(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None


def _record(event: Any) -> Record:
    message = event.message
    return Record(message.partition, message.offset, message.key, message.value,
                  round(message.timestamp * 1000))


def _observe(result: BatchResult, records: list[Record]) -> None:
    BATCH_SIZE.observe(len(records))
    APPLY_SECONDS.observe(result.apply_s)
    APPLIED.inc(result.applied)
    SKIPPED.inc(result.skipped)
    for (status, reason), n in result.counts.items():
        OUTCOMES.labels(status, reason or "").inc(n)
    for r in records:
        LAST_OFFSET.labels(str(r.partition)).set(r.offset + 1)


@app.agent(transactions, concurrency=1)
async def project(stream: Any) -> None:
    projection = Projection(cfg.projector_database_url, cfg.kafka_bootstrap)
    try:
        await _project(stream, projection)
    except Exception:
        # Never let faust restart the agent: the failed batch's events are gone from the stream, and
        # carrying on would skip them (the writer would refuse with OffsetGap anyway). Exit at once, before
        # any offset of theirs is committed; a supervisor starts a fresh worker at the projection's offsets.
        log.critical("the projector failed; exiting for a clean restart", exc_info=True)
        os._exit(EXIT_ON_CRASH)
    finally:
        await projection.close()


async def _project(stream: Any, projection: Projection) -> None:
    async for events in stream.take_events(cfg.batch_size_max, within=cfg.batch_wait_ms / 1000):
        records = [_record(e) for e in events]
        result = await projection.apply(records)
        _observe(result, records)
        if result.skipped:
            log.info("skipped redelivered records", extra={"skipped": result.skipped})
        log.debug("batch applied", extra={"records": len(records), "applied": result.applied,
                                          "apply_ms": round(result.apply_s * 1000, 1)})


WATCHDOG_INTERVAL_S = 5.0
STALL_S_MAX = 30.0


@app.timer(WATCHDOG_INTERVAL_S)
async def watchdog() -> None:
    """Stop the worker when the log has records waiting but nothing is applied for `STALL_S_MAX`.

    Seen after a broker restart: faust's consumer dropped its subscription while the topic briefly looked
    missing and never rejoined. A supervisor (make run, compose, Kubernetes) starts a fresh worker, which
    resumes from the projection's offsets.
    """
    state = WATCH
    try:
        end = await log_end(cfg.kafka_bootstrap)
        conn = await asyncpg.connect(cfg.projector_database_url, timeout=5)
        try:
            projected = {r["log_partition"]: r["next_offset"] for r in await conn.fetch("SELECT * FROM api_offsets()")}
        finally:
            await conn.close()
    except (OSError, KafkaError, asyncpg.PostgresError, TimeoutError) as e:
        log.info("watchdog could not look (%r)", e)
        return
    lag = sum(max(0, o - projected.get(p, 0)) for p, o in end.items())
    for p, offset in end.items():
        LAG.labels(str(p)).set(max(0, offset - projected.get(p, 0)))
    now = time.monotonic()
    if lag == 0 or projected != state.get("projected"):
        state.update(projected=projected, since=now)
        return
    if now - state["since"] > STALL_S_MAX:
        log.critical("no progress for %.0f s with %d records waiting; stopping so a supervisor restarts me",
                     now - state["since"], lag)
        os.kill(os.getpid(), signal.SIGTERM)


async def align_group_offsets() -> None:
    """Move the group's committed offsets back to the projection's where they are ahead of it.

    Kafka's committed offsets trail PostgreSQL's (faust commits after a batch), but a restored database can
    be behind them, and starting there would skip records. Kafka accepts this commit only while the group
    has no live member, so it runs before the worker joins; with members alive, they own the offsets.
    """
    conn = await asyncpg.connect(cfg.projector_database_url, timeout=10)
    try:
        projected = {r["log_partition"]: r["next_offset"] for r in await conn.fetch("SELECT * FROM api_offsets()")}
    finally:
        await conn.close()
    kafka = AIOKafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, group_id=app.conf.id, enable_auto_commit=False)
    await kafka.start()
    try:
        tps = await topic_partitions(kafka, TRANSACTIONS_TOPIC)
        kafka.assign(tps)
        ahead = {}
        for tp in tps:
            committed = await kafka.committed(tp)
            if committed is not None and committed > projected.get(tp.partition, 0):
                ahead[tp] = OffsetAndMetadata(projected.get(tp.partition, 0), "")
        if ahead:
            await kafka.commit(ahead)
            log.warning("moved the group's offsets back to the projection's: %s",
                        {tp.partition: o.offset for tp, o in ahead.items()})
    except KafkaError as e:
        log.info("group offsets left as they are (%r): the group has live members", e)
    finally:
        await kafka.stop()


def main() -> None:
    """Run one projector worker in the foreground until SIGINT/SIGTERM."""
    asyncio.run(align_group_offsets())
    metrics_port = int(os.environ.get("LEDGER_PROJECTOR_METRICS_PORT", "0"))
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    level = os.environ.get("LEDGER_LOG_LEVEL", "WARNING")
    worker = faust.Worker(app, loglevel=level, quiet=True, logging_config=logs.config("projector", level))
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
