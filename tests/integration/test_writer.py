"""The batch writer against real PostgreSQL: one transaction per batch, redeliveries skipped, gaps refused."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from infra.settings import PROGRESS_CHANNEL
from projections.writer import OffsetGap, apply_batch, committed_offsets
from tests.integration.conftest import record
from tests.stack import unique


async def test_a_redelivered_batch_is_skipped(scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    tenant = unique()
    batch = [record(0, tenant), record(1, tenant), record(2, tenant)]
    first = await apply_batch(conn, batch, schema=schema)
    again = await apply_batch(conn, [*batch[1:], record(3, tenant)], schema=schema)
    assert (first.applied, first.skipped) == (3, 0)
    assert (again.applied, again.skipped) == (1, 2)
    assert await conn.fetchval(f"SELECT balance FROM {schema}.balances WHERE account = 'alice'") == 40
    assert await committed_offsets(conn, schema) == {0: 4}


async def test_a_gap_is_refused_and_nothing_is_written(scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    tenant = unique()
    await apply_batch(conn, [record(0, tenant)], schema=schema)
    with pytest.raises(OffsetGap):
        await apply_batch(conn, [record(1, tenant), record(5, tenant)], schema=schema)
    assert await committed_offsets(conn, schema) == {0: 1}
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.transactions") == 1


async def test_a_failed_batch_rolls_back_whole(scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    tenant = unique()

    async def failing_publish(outcomes: list[tuple[int, bytes, bytes]]) -> None:
        assert len(outcomes) == 2
        raise ConnectionError("Kafka went away")

    with pytest.raises(ConnectionError):
        await apply_batch(conn, [record(0, tenant), record(1, tenant)], publish=failing_publish, schema=schema)
    assert await committed_offsets(conn, schema) == {}
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.entries") == 0


async def test_a_rebuild_schema_does_not_move_the_apis_progress(scratch: tuple[asyncpg.Connection, str]) -> None:
    # The API's waiters trust every progress notification to be the live projection's: a replay into a
    # shadow schema announcing its offsets would wake `min_position` readers before their rows are live.
    conn, schema = scratch
    heard: list[str] = []
    listener = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    await listener.add_listener(PROGRESS_CHANNEL, lambda *args: heard.append(args[-1]))
    try:
        result = await apply_batch(conn, [record(0, unique()), record(1, unique())], schema=schema)
        await listener.execute("SELECT 1")  # notifications arrive before the reply to a later query
        await conn.execute("SELECT pg_notify($1, 'marker')", PROGRESS_CHANNEL)
        await asyncio.sleep(0.2)
        await listener.execute("SELECT 1")
    finally:
        await listener.close()
    assert result.applied == 2
    assert heard == ["marker"]
