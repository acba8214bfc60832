"""Writing a steady stream and checking afterwards that every acknowledged request is in the projection."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ops.verify import verify
from tests.stack import SETTINGS, TRANSACTIONS_TOPIC, Stack, unique

needs_local_services = pytest.mark.skipif(
    os.environ.get("LEDGER_TEST_LOCAL_SERVICES") != "1",
    reason="stops and restarts Kafka/PostgreSQL, which it may do only to the project's own local services",
)


def request(tenant: str, amount: int = 1) -> bytes:
    return orjson.dumps({"v": 1, "id": unique("f"), "tenant": tenant,
                         "postings": [{"source": "@world", "destination": "acct", "amount": amount, "asset": "USD/2"}]})


async def stream(producer: AIOKafkaProducer, tenants: list[str], stop: asyncio.Event,
                 rate_per_s: int = 500) -> dict[str, int]:
    """Append deposits of 1 at about `rate_per_s` until `stop`; returns how many each tenant got acknowledged."""
    sent = dict.fromkeys(tenants, 0)
    pending = []
    for tenant in tenants:  # tenants are on the log: created there first (again is harmless: already_exists)
        creation = {"v": 1, "kind": "tenant", "id": unique("c"), "tenant": tenant, "name": tenant}
        await producer.send(TRANSACTIONS_TOPIC, orjson.dumps(creation), key=tenant.encode())
    n = 0
    while not stop.is_set():
        tenant = tenants[n % len(tenants)]
        pending.append((tenant, await producer.send(TRANSACTIONS_TOPIC, request(tenant), key=tenant.encode())))
        n += 1
        await asyncio.sleep(1 / rate_per_s)
    for tenant, future in pending:
        await future
        sent[tenant] += 1
    return sent


async def wait_projected(db: asyncpg.Pool, sent: dict[str, int], timeout_s: float = 120,
                         stack: Stack | None = None) -> float:
    """Until every tenant's balance equals what was acknowledged for it; returns the seconds it took.

    With `stack`, a projector that stopped itself (its watchdog) is restarted, as a supervisor would."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if stack is not None:
            stack.ensure_projector()
        rows = await db.fetch("SELECT tenant, balance FROM balances WHERE account = 'acct' AND tenant = ANY($1)",
                              list(sent))
        got = {r["tenant"]: r["balance"] for r in rows}
        if all(got.get(t, 0) == n for t, n in sent.items()):
            return time.monotonic() - started
        assert all(got.get(t, 0) <= n for t, n in sent.items()), f"applied more than sent: {got} > {sent}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"not projected in {timeout_s} s: {sent}")


async def assert_verified(tenants: list[str]) -> None:
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, SETTINGS.transactions_topic, tenants)
    assert verdict.identical, verdict.differences
    assert verdict.replayed > 0
