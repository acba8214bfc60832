"""The dispatcher's view of the registered endpoints (`dispatch.directory.Directory`) is read once and then only probed:
one cheap query per batch of decisions, the whole list again only after a registration or a deletion. With no
endpoint at all the probe answers NULL, and the list was read again on every batch (found by pg_stat_statements
in a run of 320 waited writes: 329 reads of the list)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dispatch.directory import Directory
from dispatch.statements import ACTIVE_WEBHOOKS, LAST_CHANGE


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    try:
        yield connection
    finally:
        await connection.close()


async def queries_of(conn: asyncpg.Connection, directory: Directory) -> list[str]:
    """The statements one `refresh` ran on the (real) connection."""
    seen: list[str] = []

    def logged(record: asyncpg.LoggedQuery) -> None:
        seen.append(record.query)

    conn.add_query_logger(logged)
    try:
        await directory.refresh(conn)
        await asyncio.sleep(0)  # asyncpg hands each logged query to the loggers with `call_soon`
    finally:
        conn.remove_query_logger(logged)
    return seen


async def test_the_endpoints_are_read_again_only_after_a_change(conn: asyncpg.Connection) -> None:
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("SET LOCAL session_replication_role = replica")  # deliveries of other tests refer to some
        await conn.execute("DELETE FROM webhooks")  # rolled back: no endpoint at all, the probe answers NULL
        directory = Directory()
        assert await queries_of(conn, directory) == [LAST_CHANGE, ACTIVE_WEBHOOKS]
        assert await queries_of(conn, directory) == [LAST_CHANGE], "nothing changed: the probe only"
        assert directory.by_tenant == {}
        await conn.execute(
            "INSERT INTO webhooks (tenant, id, url, events, secret, created_at, changed_at)"
            " VALUES ('t', 'w1', 'https://example.com/hook', ARRAY['transaction.committed'], 'whsec', now(), now())")
        assert await queries_of(conn, directory) == [LAST_CHANGE, ACTIVE_WEBHOOKS]
        assert [h.id for h in directory.by_tenant["t"]] == ["w1"]
        assert await queries_of(conn, directory) == [LAST_CHANGE]
    finally:
        await transaction.rollback()
