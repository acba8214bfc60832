"""Fixtures shared by the service tests; unit tests request none of them and need no services."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.stack import Stack, unique

CREATE_RETRY_S = 60


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    running = Stack()
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {stack.admin_token}"}) as client:
        yield client


@dataclass
class Tenant:
    id: str
    key: str
    client: httpx.AsyncClient

    def path(self, suffix: str = "") -> str:
        return f"/v1/tenants/{self.id}{suffix}"


async def create_tenant(admin: httpx.AsyncClient, stack: Stack, scopes: tuple[str, ...] = ("read", "write")) -> Tenant:
    tenant_id = unique()
    created = await admin.post("/v1/tenants", json={"id": tenant_id, "name": tenant_id})
    deadline = time.monotonic() + CREATE_RETRY_S
    # Creating a tenant appends to the log: right after a fault test restarted Kafka, an append may not be
    # acknowledged in time (503, Retry-After). A client retries; a 409 then means the first attempt landed.
    retried = False
    while created.status_code == 503 and time.monotonic() < deadline:
        await asyncio.sleep(float(created.headers.get("Retry-After", "1")))
        created = await admin.post("/v1/tenants", json={"id": tenant_id, "name": tenant_id})
        retried = True
    assert created.status_code == 201 or (retried and created.status_code == 409), created.text
    key = await admin.post(f"/v1/tenants/{tenant_id}/keys", json={"scopes": list(scopes)})
    assert key.status_code == 201, key.text
    secret = key.json()["key"]
    client = httpx.AsyncClient(base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {secret}"})
    return Tenant(tenant_id, secret, client)


@pytest.fixture
async def tenant(admin: httpx.AsyncClient, stack: Stack) -> AsyncIterator[Tenant]:
    created = await create_tenant(admin, stack)
    yield created
    await created.client.aclose()


@pytest.fixture(scope="session")
async def producer(stack: Stack) -> AsyncIterator[AIOKafkaProducer]:
    kafka = AIOKafkaProducer(bootstrap_servers=os.environ["LEDGER_KAFKA_BOOTSTRAP"], enable_idempotence=True)
    await kafka.start()
    yield kafka
    await kafka.stop()


async def live_projection(conn: asyncpg.Connection) -> None:
    """Point a pooled connection at the live projection each time it is handed out (`ledger replay` may
    switch it during the session)."""
    schema = await conn.fetchval("SELECT active_schema FROM public.ledger_meta")
    await conn.execute(f"SET search_path = {schema}, public")


@pytest.fixture(scope="session")
async def db() -> AsyncIterator[asyncpg.Pool]:
    """The owner's connection, for asserting on what the projector stored."""
    pool = await asyncpg.create_pool(os.environ["LEDGER_DATABASE_URL"], min_size=1, max_size=4, setup=live_projection)
    yield pool
    await pool.close()
