"""The SQL adapter against real PostgreSQL: what a batch announces, and which errors count as whose."""

from __future__ import annotations

import asyncio
import os

import asyncpg

from infra.settings import PROGRESS_CHANNEL
from projections.faults import poison, transient
from projections.pipeline import Pipeline
from tests.integration.conftest import created, record
from tests.stack import unique


async def test_a_rebuild_schema_does_not_move_the_apis_progress(scratch: tuple[asyncpg.Connection, str],
                                                                line: Pipeline) -> None:
    # The API's waiters trust every progress notification to be the live projection's: a replay into a
    # shadow schema announcing its offsets would wake `min_position` readers before their rows are live.
    conn, _ = scratch
    heard: list[str] = []
    listener = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    await listener.add_listener(PROGRESS_CHANNEL, lambda *args: heard.append(args[-1]))
    try:
        tenant = unique()
        done = await line.submit([created(0, tenant), record(1, tenant)])
        done += await line.drain()
        await conn.execute("SELECT pg_notify($1, 'marker')", PROGRESS_CHANNEL)
        for _ in range(100):  # notifications arrive in order: once the marker is in, nothing else is coming
            await listener.execute("SELECT 1")
            if heard:
                break
            await asyncio.sleep(0.02)
    finally:
        await listener.close()
    assert sum(r.applied for r in done) == 2
    assert heard == ["marker"]


async def test_errors_from_a_records_values_are_poison_and_faults_of_the_surroundings_are_not(
        scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, _ = scratch
    caught: list[BaseException] = []
    for statement in ("SELECT '\"a\\u0000b\"'::jsonb", "SELECT 1 / 0", "SELECT (2^63)::bigint",
                      "CREATE TEMP TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (1)"):
        try:
            await conn.execute(statement)
        except asyncpg.PostgresError as e:
            caught.append(e)
    try:
        await conn.execute("SELECT $1::bigint", 2**64)
    except asyncpg.DataError as e:  # refused on our side, before it is sent
        caught.append(e)
    assert len(caught) == 5
    assert all(poison(e) and not transient(e) for e in caught), caught
    for fault in (ConnectionResetError(), TimeoutError(), asyncpg.SerializationError("conflict"),
                  asyncpg.AdminShutdownError("shutdown"), asyncpg.InsufficientResourcesError("disk full")):
        assert transient(fault) and not poison(fault), fault
    # A programming error is neither: the worker exits for a clean restart.
    assert not poison(asyncpg.UndefinedTableError("no table")) and not transient(asyncpg.UndefinedTableError("x"))
