"""A projector killed mid-stream and restarted applies every request exactly once."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from ledger.positions import Position
from tests.conftest import Tenant
from tests.e2e.helpers import balances, posting
from tests.stack import TRANSACTIONS_TOPIC, Stack, token, unique

BURST = 1500


async def _burst(producer: AIOKafkaProducer, tenant: str, count: int) -> str:
    futures = []
    for _ in range(count):
        value = orjson.dumps({"v": 1, "id": unique("r"), "tenant": tenant,
                              "postings": [posting("@world", "alice", 3), posting("alice", "bob", 1)]})
        futures.append(await producer.send(TRANSACTIONS_TOPIC, value, key=tenant.encode()))
    last = await futures[-1]
    await asyncio.gather(*futures)
    return token(tenant, Position(last.partition, last.offset))


async def _count(db: asyncpg.Pool, tenant: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM transactions WHERE tenant = $1", tenant))


async def test_killed_projector_restarts_without_applying_twice(
    stack: Stack, tenant: Tenant, producer: AIOKafkaProducer, db: asyncpg.Pool
) -> None:
    await _burst(producer, tenant.id, BURST)
    for _ in range(300):
        if await _count(db, tenant.id) > 0:
            break
        await asyncio.sleep(0.02)
    stack.kill_projector(signal.SIGKILL)
    applied_at_kill = await _count(db, tenant.id)
    last = await _burst(producer, tenant.id, BURST)
    stack.start_projector()
    response = await tenant.client.get(f"/v1/tenants/{tenant.id}/accounts/alice",
                                       params={"min_position": last, "timeout_ms": 30000})
    assert response.status_code == 200, response.text
    total = 2 * BURST
    assert 0 < applied_at_kill < total
    assert response.json()["balances"] == {"USD/2": 2 * total}
    assert await balances(tenant.client, tenant.id, "bob") == {"USD/2": total}
    assert await _count(db, tenant.id) == total
    entries = await db.fetchval("SELECT count(*) FROM entries WHERE tenant = $1", tenant.id)
    assert entries == 4 * total
    sums = await db.fetch("SELECT asset, sum(balance) AS total FROM balances WHERE tenant = $1 GROUP BY asset",
                          tenant.id)
    assert [(r["asset"], r["total"]) for r in sums] == [("USD/2", 0)]
