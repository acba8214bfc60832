"""The projector: one member of a Kafka consumer group reads `ledger.transactions` in batches and applies them.

One batch at a time per worker: ordering within a partition is the whole point. Several workers in the
group share the partitions. The offsets live in PostgreSQL, committed with each batch's rows: on every
assignment the consumer seeks to them (Kafka's pattern for offsets kept outside Kafka), and the offsets rows
keep a redelivered record from applying twice. Kafka's committed offsets trail them, for lag tooling only.

aiokafka's consumer is used directly: faust-streaming, measured here, spent ~200 µs of framework per record
(a task and an `asyncio.wait` per message before our code saw it) and capped one projector at ~2,300
records/s, while aiokafka's `getmany` hands over whole fetches at ~260,000 records/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.config
import signal
import sys
import time

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from infra import gc_pauses, logs
from infra import settings as settings_mod
from infra.kafka import PacedCommits, log_end, topic_config, topic_partitions
from infra.producer import RenewingProducer, producer_config
from infra.settings import Settings
from ledger.batch import ANSWER_HEADER, Record
from ledger.codec import encode_request
from ledger.positions import PositionKey
from ledger.requests import Tick
from projections.pipeline import GC_THRESHOLDS, BatchResult, Pipeline

log = logging.getLogger("ledger.projector")

EXIT_ON_CRASH = 70
# A statement that hangs (a lock never granted, a server stuck) is cancelled and retried like a lost connection.
STATEMENT_TIMEOUT_MS = "60000"
EXIT_ON_CONFIG = 78  # sysexits' EX_CONFIG: a restart cannot help

# On SIGTERM the worker finishes its batch and exits; one stuck in a retry against a dependency that is down
# is cancelled after this (the README promises a stop within 10 s).
STOP_GRACE_S = 5.0
# The clock: once a second, a tick goes to each partition this worker owns that has an open hold due, so
# the hold expires by the log's time even when nothing else is appended there (within ~1 s of its time).
TICK_INTERVAL_S = 1.0
TICK_VALUE = encode_request(Tick())
# One index probe per partition (holds_open_by_expiry leads with the partition), however many holds are open.
DUE_PARTITIONS = """
SELECT p FROM unnest($1::int[]) AS p
WHERE EXISTS (SELECT FROM holds h WHERE h.log_partition = p AND h.state = 'held' AND h.expires_at <= now())
"""
# Bounds what the consumer prefetches while a batch is applied: ~12,000 records of ~350 bytes a partition.
FETCH_PARTITION_BYTES_MAX = 4 * 1024 * 1024
FETCH_BYTES_MAX = 32 * 1024 * 1024
# The fetch long-polls with Kafka's defaults (answered at the first byte, or after 500 ms when idle). Holding
# fetches for 64 KiB or 5 ms cut the broker's CPU at 500 appends/s by a third, but an idle projector then
# polled 200 times a second and it and the broker burnt 35% of a core doing nothing.

WATCHDOG_INTERVAL_S = 5.0
STALL_S_MAX = 30.0

BATCH_SIZE = Histogram("ledger_projector_batch_size", "Records per batch",
                       buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000))
APPLY_SECONDS = Histogram("ledger_projector_apply_seconds", "Time to apply one batch in PostgreSQL")
OUTCOMES = Counter("ledger_projector_outcomes_total", "Decided requests", ["status", "reason"])
SKIPPED = Counter("ledger_projector_skipped_total", "Redelivered records skipped")
APPLIED = Counter("ledger_projector_applied_total", "Records applied")
LAST_OFFSET = Gauge("ledger_projector_next_offset", "Next offset to apply", ["partition"])
LAG = Gauge("ledger_projector_lag_records", "Records in the log not yet applied", ["partition"])

# Under the broker's default message.max.bytes (1 MiB) and the consumers' max_partition_fetch_bytes (1 MiB).
OUTCOME_BATCH_BYTES = 512 * 1024
# A batch's write waits for its outcomes' acknowledgement: a Kafka node's loss takes 4-8 s to move leaders, and a
# failure past this is retried with the write (RETRY_DEADLINE_S), then the worker restarts.
OUTCOMES_DELIVERY_TIMEOUT_MS = 10_000


class ProjectorProducer:
    """The projector's producer: a batch's outcomes to `ledger.outcomes`, and the clock's ticks to the log.
    librdkafka (as the API's and the producer client's), idempotent with acks=all. aiokafka's producer wedged
    here once, under make soak-cluster: after a Kafka node's loss its start() never returned (InvalidStateError
    in its pid handshake), the batch it was to publish held its write, and the watchdog restarted the projector
    after 31 s."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.partitions: int | None = None
        # One record batch per partition per poll: librdkafka batches up to batch.size on its own.
        self.holder = RenewingProducer(
            producer_config(bootstrap, delivery_timeout_ms=OUTCOMES_DELIVERY_TIMEOUT_MS, client_id="ledger-projector",
                            **{"batch.size": OUTCOME_BATCH_BYTES}), "outcomes", 1.0)

    async def _sent(self, sent: list[asyncio.Future[tuple[int, int | None]]]) -> None:
        """Wait for every acknowledgement (each failure retrieved), then raise the first failure if any."""
        results = await asyncio.gather(*sent, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed

    async def tick(self, topic: str, partitions: list[int]) -> None:
        """Append the clock's tick to `partitions` of the log (no key: it belongs to no tenant)."""
        producer = self.holder.current()
        await self._sent([producer.send(topic, TICK_VALUE, None, partition=p) for p in partitions])

    async def publish(self, outcomes: list[tuple[int, bytes, bytes]]) -> None:
        """Send a batch's outcomes, each to the partition with its request's number, and wait for Kafka's
        acknowledgement of all (a failure is a fault of the surroundings: the batch's write is retried)."""
        if not outcomes:
            return
        producer = self.holder.current()
        if self.partitions is None:
            self.partitions = await producer.partition_count(self.topic)
        partitions = self.partitions
        await self._sent([producer.send(self.topic, value, key, partition=partition % partitions)
                          for partition, key, value in outcomes])

    async def close(self) -> None:
        await self.holder.stop()


def _observe(result: BatchResult) -> None:
    BATCH_SIZE.observe(result.applied + result.skipped)
    APPLY_SECONDS.observe(result.apply_s)
    APPLIED.inc(result.applied)
    SKIPPED.inc(result.skipped)
    for (status, reason), n in result.counts.items():
        OUTCOMES.labels(status, reason or "").inc(n)
    for partition, offset in result.next_offsets.items():
        LAST_OFFSET.labels(str(partition)).set(offset)


async def projected_offsets(url: str) -> dict[int, int]:
    """The live projection's next offset per partition (partitions it has never seen are absent)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return {r["log_partition"]: r["next_offset"] for r in await conn.fetch("SELECT * FROM api_offsets()")}
    finally:
        await conn.close()


class SeekToProjection(ConsumerRebalanceListener):  # type: ignore[misc]
    """On every assignment, position the consumer where the projection stands, not where Kafka's committed
    offsets say: those trail PostgreSQL's, and a restored database can be behind them."""

    def __init__(self, consumer: AIOKafkaConsumer, url: str, pipeline: Pipeline) -> None:
        self.consumer = consumer
        self.url = url
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.pipeline.reset_wanted = True
        projected = await projected_offsets(self.url)
        for tp in assigned:
            if tp.partition in projected:
                self.consumer.seek(tp, projected[tp.partition])
        fresh = [tp for tp in assigned if tp.partition not in projected]
        if fresh:  # a projection that has applied nothing starts wherever the log starts
            await self.consumer.seek_to_beginning(*fresh)
        log.info("partitions assigned", extra={"positions": {tp.partition: projected.get(tp.partition, 0)
                                                             for tp in assigned}})


class Projector:
    """The consume → apply → commit loop of one worker, stopped by SIGTERM/SIGINT after its current batch."""

    def __init__(self, cfg: Settings, positions: PositionKey) -> None:
        self.cfg = cfg
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.kafka_bootstrap, group_id=cfg.projector_group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=cfg.batch_size_max,
            # Partitions, not ranges of them, dealt in turn: tenants hash to partitions, so several projectors
            # share the tenants as evenly as the partitions allow.
            partition_assignment_strategy=(RoundRobinPartitionAssignor,),
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES_MAX, fetch_max_bytes=FETCH_BYTES_MAX,
            # A dead member's partitions move to a survivor after this, not after a minute.
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000, rebalance_timeout_ms=20_000,
        )
        self.outcomes = ProjectorProducer(cfg.kafka_bootstrap, cfg.outcomes_topic)
        # Outcomes carry the tenant's position token, sealed as the API seals it.
        self.positions = positions
        self.pipeline: Pipeline | None = None
        self.stopping = asyncio.Event()
        self.commits = PacedCommits(self.consumer)  # of the writes that finished

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        await self.consumer.start()
        watchdog: asyncio.Task[None] | None = None
        clock: asyncio.Task[None] | None = None
        try:
            topic = self.cfg.transactions_topic
            partitions = len(await topic_partitions(self.consumer, topic))
            if not partitions:
                raise RuntimeError(f"the topic {topic!r} does not exist")
            stamps = await topic_config(self.cfg.kafka_bootstrap, topic, "message.timestamp.type")
            if stamps != "LogAppendTime":
                # Times come from the log (holds expire by them, replays reproduce them): a producer must not
                # be able to set a record's time.
                log.critical("the topic %r has message.timestamp.type=%s, not LogAppendTime; refusing to run",
                             topic, stamps)
                return EXIT_ON_CONFIG
            pipeline = self.pipeline = Pipeline(
                lambda: asyncpg.connect(self.cfg.projector_database_url, timeout=5,
                                        server_settings={"statement_timeout": STATEMENT_TIMEOUT_MS}),
                self.outcomes.publish,
                partitions, positions=self.positions, writes_in_flight=self.cfg.writes_in_flight)
            listener = SeekToProjection(self.consumer, self.cfg.projector_database_url, pipeline)
            self.consumer.subscribe([topic], listener=listener)
            watchdog = asyncio.create_task(self._watchdog())
            clock = asyncio.create_task(self._clock())
            await self._until_stopped(asyncio.create_task(self._consume(pipeline)))
            return 0 if not watchdog.done() else EXIT_ON_CRASH
        finally:
            for task in (watchdog, clock):
                if task is not None:
                    task.cancel()
            if self.pipeline is not None:
                await self.pipeline.close()
            await self.consumer.stop()
            await self.outcomes.close()

    async def _until_stopped(self, work: asyncio.Task[None]) -> None:
        """Run the loop until it ends or a stop is asked; then give it `STOP_GRACE_S` to finish its batch."""
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                await asyncio.wait({work}, timeout=STOP_GRACE_S)
            if not work.done():
                log.warning("still busy %.0f s after the stop signal (a dependency down?); cancelling", STOP_GRACE_S)
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return
            work.result()
        finally:
            stop.cancel()

    async def _consume(self, pipeline: Pipeline) -> None:
        while not self.stopping.is_set():
            fetched = await self.consumer.getmany(timeout_ms=self.cfg.batch_wait_ms,
                                                  max_records=self.cfg.batch_size_max)
            if fetched:
                records = [Record(m.partition, m.offset, m.key, m.value, m.timestamp,
                                  bool(m.headers) and any(k == ANSWER_HEADER for k, _ in m.headers))
                           for messages in fetched.values() for m in messages]
                self._finished(await pipeline.submit(records))
            else:
                self._finished(await pipeline.drain())
            await self.commits.commit()
        self._finished(await pipeline.drain())
        await self.commits.commit(force=True)

    def _finished(self, results: list[BatchResult]) -> None:
        for result in results:
            _observe(result)
            # Kafka's committed offsets, for lag tooling only (PostgreSQL's decide).
            self.commits.done({TopicPartition(self.cfg.transactions_topic, p): offset
                               for p, offset in result.next_offsets.items()})
            if result.skipped:
                log.info("skipped redelivered records", extra={"skipped": result.skipped})
            log.debug("batch applied", extra={"applied": result.applied, "skipped": result.skipped,
                                              "apply_ms": round(result.apply_s * 1000, 1)})

    async def _clock(self) -> None:
        """Tick the partitions whose open holds are due (the decision stays the log's: a tick only carries
        the broker's time to the fold, which expires what that time says)."""
        conn: asyncpg.Connection | None = None
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.cfg.projector_database_url, timeout=5)
                mine = sorted(tp.partition for tp in self.consumer.assignment())
                async with conn.transaction(readonly=True):
                    await conn.execute("SELECT projector_begin()")
                    due = [r["p"] for r in await conn.fetch(DUE_PARTITIONS, mine)]
                if due:
                    await self.outcomes.tick(self.cfg.transactions_topic, due)
            except Exception as e:  # the clock keeps going whatever one tick met; it decides nothing
                log.warning("clock could not tick (%r)", e)
                if conn is not None:
                    conn.terminate()
                    conn = None

    async def _watchdog(self) -> None:
        """Stop the worker when the log has records waiting but nothing is applied for `STALL_S_MAX`: a
        supervisor (make run, compose, Kubernetes) starts a fresh one, which resumes from the projection."""
        since, seen = time.monotonic(), None
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            try:
                end = await log_end(self.cfg.kafka_bootstrap, self.cfg.transactions_topic)
                projected = await projected_offsets(self.cfg.projector_database_url)
            except (OSError, KafkaError, asyncpg.PostgresError, TimeoutError) as e:
                log.info("watchdog could not look (%r)", e)
                continue
            for p, offset in end.items():
                LAG.labels(str(p)).set(max(0, offset - projected.get(p, 0)))
            lag = sum(max(0, o - projected.get(p, 0)) for p, o in end.items())
            if lag == 0 or projected != seen:
                since, seen = time.monotonic(), projected
            elif time.monotonic() - since > STALL_S_MAX:
                log.critical("no progress for %.0f s with %d records waiting; stopping so a supervisor restarts me",
                             time.monotonic() - since, lag)
                self.stopping.set()
                return


async def _main(cfg: Settings, positions: PositionKey) -> int:
    projector = Projector(cfg, positions)
    try:
        return await projector.run()
    except Exception:
        # Exit before anything else happens: a supervisor starts a fresh worker, which seeks to the
        # projection's offsets, so the failed batch is neither skipped nor applied twice.
        log.critical("the projector failed; exiting for a clean restart", exc_info=True)
        return EXIT_ON_CRASH


def main() -> None:
    """Run one projector worker in the foreground until SIGINT/SIGTERM."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc_pauses.watch()
    try:
        cfg = settings_mod.load()
        positions = PositionKey(settings_mod.require_position_key(cfg, "the projector"))
    except settings_mod.SettingsError as e:
        sys.exit(f"projector: {e}")
    logging.config.dictConfig(logs.config("projector", cfg.log_level or "WARNING"))
    if cfg.projector_metrics_port:
        start_http_server(cfg.projector_metrics_port, addr=cfg.metrics_host)
    sys.exit(asyncio.run(_main(cfg, positions)))


if __name__ == "__main__":
    main()
