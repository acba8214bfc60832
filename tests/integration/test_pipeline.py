"""The one apply path against real PostgreSQL: batches folded on carried state, stale state detected,
redeliveries skipped, gaps refused."""

from __future__ import annotations

import os

import asyncpg
import pytest

from ledger.positions import PositionKey
from projections.pipeline import OffsetGap, Pipeline, write
from projections.writer import committed_offsets
from tests.integration.conftest import PARTITIONS, created, home, record
from tests.stack import unique


async def statuses(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[str, str | None]]:
    rows = await conn.fetch(f"SELECT id, status, reason FROM {schema}.transactions")
    return {r["id"]: (r["status"], r["reason"]) for r in rows}


async def alice(conn: asyncpg.Connection, schema: str) -> int:
    return int(await conn.fetchval(f"SELECT balance FROM {schema}.balances WHERE account = 'alice'"))


async def test_each_batch_is_decided_on_the_state_the_one_before_left(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    # alice gets 10, then spends 6 twice: the second spend must see the first, still uncommitted.
    done = await line.submit([created(0, tenant), record(1, tenant, 10)])
    done += await line.submit([record(2, tenant, 6, source="alice", destination="bob")])
    done += await line.submit([record(3, tenant, 6, source="alice", destination="bob")])
    done += await line.drain()
    assert [r.applied for r in done] == [2, 1, 1]
    assert await statuses(conn, schema) == {"tx1": ("committed", None), "tx2": ("committed", None),
                                             "tx3": ("rejected", "insufficient_funds")}
    balances = dict(await conn.fetch(f"SELECT account, balance FROM {schema}.balances"))
    assert balances == {"@world": -10, "alice": 4, "bob": 6}
    assert await committed_offsets(conn, schema) == {home(tenant): 4}


async def test_another_writer_in_between_is_detected_and_the_batch_redone(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([created(0, tenant), record(1, tenant, 10), record(2, tenant, 5)])
    await line.drain()
    # Another worker takes the partition for a while and applies two records this one never sees.
    other = Pipeline(lambda: asyncpg.connect(os.environ["LEDGER_DATABASE_URL"]), None, PARTITIONS, schema)
    try:
        await other.submit([record(3, tenant, 6, source="alice", destination="bob"),
                            record(4, tenant, 6, source="alice", destination="carol")])
        await other.drain()
    finally:
        await other.close()
    # Folded on carried state, record 5 would spend alice's 15; she has 3 left.
    done = await line.submit([record(3, tenant, 6, source="alice", destination="bob"),
                              record(4, tenant, 6, source="alice", destination="carol"),
                              record(5, tenant, 6, source="alice", destination="dave")])
    done += await line.drain()
    assert [(r.applied, r.skipped) for r in done] == [(1, 2)]
    assert (await statuses(conn, schema))["tx5"] == ("rejected", "insufficient_funds")
    assert await alice(conn, schema) == 3
    assert await committed_offsets(conn, schema) == {home(tenant): 6}


async def test_a_write_committed_without_acknowledgement_is_not_applied_twice(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    batch = await line._prepare(conn, [created(0, tenant), record(1, tenant, 10), record(2, tenant, 10)])
    first = await write(conn, batch, None, schema)
    retried = await write(conn, batch, None, schema)
    assert (first.applied, retried.applied, retried.skipped) == (3, 0, 3)
    assert await alice(conn, schema) == 20


@pytest.mark.parametrize("carried", [0, 1])
async def test_redelivered_records_are_skipped_before_folding(scratch: tuple[asyncpg.Connection, str],
                                                              line: Pipeline, carried: int) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([created(0, tenant), record(1, tenant, 10), record(2, tenant, 10)])
    await line.drain()
    if not carried:
        line.reset_wanted = True  # as after a rebalance: offsets are read again from PostgreSQL
    done = await line.submit([record(2, tenant, 10), record(3, tenant, 10)])
    done += await line.drain()
    assert [(r.applied, r.skipped) for r in done] == [(1, 1)]
    assert await alice(conn, schema) == 30


async def test_a_gap_is_refused_and_nothing_is_written(scratch: tuple[asyncpg.Connection, str],
                                                       line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([created(0, tenant)])
    await line.drain()
    with pytest.raises(OffsetGap):
        await line.submit([record(1, tenant), record(5, tenant)])
    assert await committed_offsets(conn, schema) == {home(tenant): 1}
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.transactions") == 0


async def test_a_partition_with_nothing_applied_starts_at_the_logs_beginning(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    # A consumer positioned past the start (say, at Kafka's committed offsets because the projection's own
    # could not be read) must not skip the records before: it is refused.
    conn, schema = scratch
    tenant = unique()
    with pytest.raises(OffsetGap):
        await line.submit([created(7, tenant), record(8, tenant)])
    assert await committed_offsets(conn, schema) == {}


async def test_a_failed_batch_rolls_back_whole(scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    tenant = unique()

    async def failing_publish(outcomes: list[tuple[int, bytes, bytes]]) -> None:
        assert len(outcomes) == 3
        raise ConnectionError("Kafka went away")

    line = Pipeline(lambda: asyncpg.connect(os.environ["LEDGER_DATABASE_URL"]), failing_publish, PARTITIONS,
                    schema, retry_deadline_s=0.5, positions=PositionKey(bytes(32)))
    try:
        with pytest.raises(Exception, match="still failing"):
            await line.submit([created(0, tenant), record(1, tenant), record(2, tenant)])
            await line.drain()
    finally:
        await line.close()
    assert await committed_offsets(conn, schema) == {}
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.entries") == 0
