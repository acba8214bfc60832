"""Replaying `ledger.transactions` into a projection schema, through the projector's own apply path.

Used to rebuild or verify projections: the same fold over the same log gives the same rows. A replay
resumes where the schema's offsets stand, so an interrupted one picks up where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import TopicPartition

from infra.kafka import consumer, log_end
from ledger.batch import Record
from projections.pipeline import BatchResult, Connect, Keep, Pipeline
from projections.writer import committed_offsets

FETCH_TIMEOUT_MS = 1000
EMPTY_FETCHES_MAX = 30


@dataclass(slots=True)
class ReplayStats:
    records: int = 0
    batches: int = 0


Progress = Callable[[dict[int, int], dict[int, int], ReplayStats], None]


async def read_log(bootstrap: str, topic: str, batch_size_max: int, until: dict[int, int],
                   start: dict[int, int] | None = None,
                   until_time: datetime | None = None) -> AsyncIterator[list[Record]]:
    """Batches of the log from `start` (default: the beginning) up to `until` (next offsets per partition),
    stopping early in each partition at the first record after `until_time`."""
    start = start or {}
    kafka = consumer(bootstrap)
    await kafka.start()
    # Let the consumer's background task begin: stopping it before its first step raises CancelledError.
    await asyncio.sleep(0)
    try:
        remaining = {p for p, end in until.items() if start.get(p, 0) < end}
        tps = [TopicPartition(topic, p) for p in sorted(remaining)]
        if not tps:
            return
        kafka.assign(tps)
        for tp in tps:
            kafka.seek(tp, start.get(tp.partition, 0))
        limit_ms = None if until_time is None else int(until_time.timestamp() * 1000)
        empty = 0
        while remaining:
            fetched = await kafka.getmany(*[TopicPartition(topic, p) for p in remaining],
                                          timeout_ms=FETCH_TIMEOUT_MS, max_records=batch_size_max)
            empty = 0 if fetched else empty + 1
            if empty > EMPTY_FETCHES_MAX:
                raise TimeoutError(f"the log stopped delivering before {until}")
            batch: list[Record] = []
            for tp, messages in fetched.items():
                for m in messages:
                    if m.offset >= until[tp.partition] or (limit_ms is not None and m.timestamp > limit_ms):
                        remaining.discard(tp.partition)
                        break
                    batch.append(Record(m.partition, m.offset, m.key, m.value, m.timestamp))
                if await kafka.position(tp) >= until[tp.partition]:
                    remaining.discard(tp.partition)
            if batch:
                yield batch
    finally:
        await kafka.stop()


async def replay(connect: Connect, bootstrap: str, topic: str, schema: str, batch_size_max: int = 5000,
                 until: dict[int, int] | None = None, until_time: datetime | None = None,
                 progress: Progress | None = None, keep: Keep | None = None) -> ReplayStats:
    """Apply the log to the projection in `schema`, from its own offsets up to `until` (default: the end).

    Batches go through the projector's pipeline on connections of their own (`connect`): batch N+1 is
    folded while N is written. With `keep`, only the records it keeps are decided (`ledger verify --tenant`).
    """
    stats = ReplayStats()
    log = await log_end(bootstrap, topic)
    end = until if until is not None else log
    conn = await connect()
    try:
        start = await committed_offsets(conn, schema)
    finally:
        await conn.close()
    current = {p: start.get(p, 0) for p in end}
    line = Pipeline(connect, None, len(log), schema, keep=keep)

    def count(results: list[BatchResult]) -> None:
        for result in results:
            stats.records += result.applied
            stats.batches += 1

    try:
        async for batch in read_log(bootstrap, topic, batch_size_max, end, start, until_time):
            count(await line.submit(batch))
            for record in batch:
                current[record.partition] = record.offset + 1
            if progress is not None:
                progress(current, end, stats)
        count(await line.drain())
    finally:
        await line.close()
    return stats
