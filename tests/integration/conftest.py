"""Fixtures of the projector's integration tests: scratch projection schemas, and log records made to order."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from infra.migrate import migrate
from infra.settings import with_database
from ledger.batch import Record
from ledger.placement import partition_for
from projections.pipeline import Pipeline

# The records made here are placed as Kafka's default partitioner would place them on a log of this size.
PARTITIONS = 4


def home(tenant: str) -> int:
    return partition_for(tenant.encode(), PARTITIONS)


def raw(offset: int, tenant: str, value: dict[str, object] | bytes, partition: int | None = None,
        key: bytes | None = None) -> Record:
    body = value if isinstance(value, bytes) else orjson.dumps(value)
    return Record(home(tenant) if partition is None else partition, offset, key or tenant.encode(), body,
                  1_700_000_000_000 + offset)


def created(offset: int, tenant: str) -> Record:
    """The record that creates `tenant`."""
    return raw(offset, tenant, {"v": 1, "kind": "tenant", "id": f"create-{offset}", "tenant": tenant, "name": tenant})


def record(offset: int, tenant: str, amount: int = 10, source: str = "@world", destination: str = "alice",
           partition: int | None = None, **fields: object) -> Record:
    """A transfer with id `tx<offset>`, on the tenant's own partition unless told otherwise."""
    value = {"v": 1, "id": f"tx{offset}", "tenant": tenant, "postings": [
        {"source": source, "destination": destination, "amount": amount, "asset": "USD/2"}], **fields}
    return raw(offset, tenant, value, partition)


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


@pytest.fixture
async def line(scratch: tuple[asyncpg.Connection, str]) -> AsyncIterator[Pipeline]:
    """A pipeline writing to the scratch schema, on connections of its own."""
    pipeline = Pipeline(lambda: asyncpg.connect(os.environ["LEDGER_DATABASE_URL"]), None, PARTITIONS, scratch[1])
    try:
        yield pipeline
    finally:
        await pipeline.close()


@pytest.fixture
async def own_database() -> AsyncIterator[str]:
    """A database of its own, freshly migrated and dropped afterwards: for a test that switches its live
    projection, or migrates it."""
    url = with_database(os.environ["LEDGER_DATABASE_URL"], f"ledger_switch_{uuid.uuid4().hex[:8]}")
    await migrate(url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(with_database(url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await admin.close()
