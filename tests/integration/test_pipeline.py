"""The pipelined writer against real PostgreSQL: batches folded on carried state, stale state detected."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from projections.pipeline import Pipeline, write
from projections.writer import apply_batch, committed_offsets
from tests.integration.conftest import record
from tests.stack import unique

TRANSIENT = (OSError, asyncpg.PostgresConnectionError)


@pytest.fixture
async def line(scratch: tuple[asyncpg.Connection, str]) -> AsyncIterator[Pipeline]:
    """A pipeline writing to the scratch schema, on connections of its own."""
    pipeline = Pipeline(lambda: asyncpg.connect(os.environ["LEDGER_DATABASE_URL"]), None, 3, TRANSIENT, scratch[1])
    try:
        yield pipeline
    finally:
        await pipeline.close()


async def statuses(conn: asyncpg.Connection, schema: str) -> dict[str, tuple[str, str | None]]:
    rows = await conn.fetch(f"SELECT id, status, reason FROM {schema}.transactions")
    return {r["id"]: (r["status"], r["reason"]) for r in rows}


async def test_each_batch_is_decided_on_the_state_the_one_before_left(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    # alice gets 10, then spends 6 twice: the second spend must see the first, still uncommitted.
    done = await line.submit([record(0, tenant, 10)])
    done += await line.submit([record(1, tenant, 6, source="alice", destination="bob")])
    done += await line.submit([record(2, tenant, 6, source="alice", destination="bob")])
    done += await line.drain()
    assert [r.applied for r in done] == [1, 1, 1]
    assert await statuses(conn, schema) == {"tx0": ("committed", None), "tx1": ("committed", None),
                                             "tx2": ("rejected", "insufficient_funds")}
    balances = dict(await conn.fetch(f"SELECT account, balance FROM {schema}.balances"))
    assert balances == {"@world": -10, "alice": 4, "bob": 6}
    assert await committed_offsets(conn, schema) == {0: 3}


async def test_another_writer_in_between_is_detected_and_the_batch_redone(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([record(0, tenant, 10), record(1, tenant, 5)])
    await line.drain()
    # Another worker takes the partition for a while and applies two records this one never sees.
    await apply_batch(conn, [record(2, tenant, 6, source="alice", destination="bob"),
                             record(3, tenant, 6, source="alice", destination="carol")], schema=schema)
    # Folded on carried state, record 4 would spend alice's 15; she has 3 left.
    done = await line.submit([record(2, tenant, 6, source="alice", destination="bob"),
                              record(3, tenant, 6, source="alice", destination="carol"),
                              record(4, tenant, 6, source="alice", destination="dave")])
    done += await line.drain()
    assert [(r.applied, r.skipped) for r in done] == [(1, 2)]
    assert (await statuses(conn, schema))["tx4"] == ("rejected", "insufficient_funds")
    assert await conn.fetchval(f"SELECT balance FROM {schema}.balances WHERE account = 'alice'") == 3
    assert await committed_offsets(conn, schema) == {0: 5}


async def test_a_write_committed_without_acknowledgement_is_not_applied_twice(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    batch = await line._prepare(conn, [record(0, tenant, 10), record(1, tenant, 10)])
    first = await write(conn, batch, None, schema)
    retried = await write(conn, batch, None, schema)
    assert (first.applied, retried.applied, retried.skipped) == (2, 0, 2)
    assert await conn.fetchval(f"SELECT balance FROM {schema}.balances WHERE account = 'alice'") == 20


@pytest.mark.parametrize("carried", [0, 1])
async def test_redelivered_records_are_skipped_before_folding(scratch: tuple[asyncpg.Connection, str],
                                                              line: Pipeline, carried: int) -> None:
    conn, schema = scratch
    tenant = unique()
    await line.submit([record(0, tenant, 10), record(1, tenant, 10)])
    await line.drain()
    if not carried:
        line.reset_wanted = True  # as after a rebalance: offsets are read again from PostgreSQL
    done = await line.submit([record(1, tenant, 10), record(2, tenant, 10)])
    done += await line.drain()
    assert [(r.applied, r.skipped) for r in done] == [(1, 1)]
    assert await conn.fetchval(f"SELECT balance FROM {schema}.balances WHERE account = 'alice'") == 30
