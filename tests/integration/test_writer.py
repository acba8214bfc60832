"""The batch writer against real PostgreSQL: one transaction per batch, redeliveries skipped, gaps refused."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from projections.batches import Record
from projections.writer import OffsetGap, apply_batch, committed_offsets
from tests.stack import unique


def record(offset: int, tenant: str, amount: int = 10, partition: int = 0) -> Record:
    value = orjson.dumps({"v": 1, "id": f"tx{offset}", "tenant": tenant, "postings": [
        {"source": "@world", "destination": "alice", "amount": amount, "asset": "USD/2"}]})
    return Record(partition, offset, tenant.encode(), value, 1_700_000_000_000 + offset)


@pytest.fixture
async def scratch() -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    conn = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    schema = f"proj_test_{uuid.uuid4().hex[:12]}"
    await conn.execute("SELECT ledger_create_projection($1)", schema)
    try:
        yield conn, schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


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
