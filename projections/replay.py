"""Replaying `ledger.transactions` from its start into a projection, with the projector's own writer.

Used to rebuild or verify projections: the same fold over the same log gives the same rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.settings import TRANSACTIONS_TOPIC
from projections.batches import Record
from projections.writer import apply_batch

FETCH_TIMEOUT_MS = 1000
EMPTY_FETCHES_MAX = 30


@dataclass(slots=True)
class ReplayStats:
    records: int = 0
    batches: int = 0


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`. An unsubscribed consumer tracks no topic's metadata, so ask the cluster
    (as `AIOKafkaConsumer.topics()` itself does)."""
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def log_end(consumer: AIOKafkaConsumer) -> dict[int, int]:
    tps = await topic_partitions(consumer, TRANSACTIONS_TOPIC)
    return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}


async def read_log(bootstrap: str, batch_size_max: int, until: dict[int, int] | None = None
                   ) -> AsyncIterator[tuple[list[Record], dict[int, int]]]:
    """Batches of the log from its start up to `until` (next offsets; default: the end when called)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        end = until if until is not None else await log_end(consumer)
        tps = [TopicPartition(TRANSACTIONS_TOPIC, p) for p in sorted(end)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {p for p, offset in end.items() if offset > 0}
        empty = 0
        while remaining:
            fetched = await consumer.getmany(*[TopicPartition(TRANSACTIONS_TOPIC, p) for p in remaining],
                                             timeout_ms=FETCH_TIMEOUT_MS, max_records=batch_size_max)
            empty = 0 if fetched else empty + 1
            if empty > EMPTY_FETCHES_MAX:
                raise TimeoutError(f"the log stopped delivering before {end}")
            batch = [Record(m.partition, m.offset, m.key, m.value, m.timestamp)
                     for tp, messages in fetched.items() for m in messages if m.offset < end[tp.partition]]
            for tp in fetched:
                if await consumer.position(tp) >= end[tp.partition]:
                    remaining.discard(tp.partition)
            if batch:
                yield batch, end
    finally:
        await consumer.stop()


async def replay(conn: asyncpg.Connection, bootstrap: str, batch_size_max: int = 5000,
                 until: dict[int, int] | None = None) -> ReplayStats:
    """Apply the log to the projection behind `conn`; already applied offsets are skipped."""
    stats = ReplayStats()
    async for batch, _ in read_log(bootstrap, batch_size_max, until):
        result = await apply_batch(conn, batch)
        stats.records += result.applied
        stats.batches += 1
    return stats
