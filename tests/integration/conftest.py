"""Fixtures of the writer tests: a scratch projection schema, and log records made to order."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from projections.batches import Record


def record(offset: int, tenant: str, amount: int = 10, partition: int = 0, source: str = "@world",
           destination: str = "alice") -> Record:
    value = orjson.dumps({"v": 1, "id": f"tx{offset}", "tenant": tenant, "postings": [
        {"source": source, "destination": destination, "amount": amount, "asset": "USD/2"}]})
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
