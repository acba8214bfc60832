"""Small helpers for driving the API in tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.kafka import topic_partitions
from ledger.positions import Position
from tests.stack import OUTCOMES_TOPIC, SETTINGS, TRANSACTIONS_TOPIC


def posting(source: str, destination: str, amount: int, asset: str = "USD/2") -> dict[str, Any]:
    return {"source": source, "destination": destination, "amount": amount, "asset": asset}


async def transfer(client: httpx.AsyncClient, tenant: str, *postings: dict[str, Any], key: str | None = None,
                   wait: bool = True, **body: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post(f"/v1/tenants/{tenant}/transactions", params={"wait": str(wait).lower()},
                             json={"postings": list(postings), **body}, headers=headers)


async def balances(
    client: httpx.AsyncClient, tenant: str, address: str, min_position: str | None = None
) -> dict[str, int]:
    params = {"min_position": min_position} if min_position else {}
    response = await client.get(f"/v1/tenants/{tenant}/accounts/{address}", params=params)
    assert response.status_code == 200, response.text
    result: dict[str, int] = response.json()["balances"]
    return result


async def produce(producer: AIOKafkaProducer, key: bytes | None, value: bytes | dict[str, Any]) -> Position:
    """Append a raw record straight to the log; returns its position (`tests.stack.token` makes the token
    a tenant's API client gets for it)."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    metadata = await producer.send_and_wait(TRANSACTIONS_TOPIC, raw, key=key)
    return Position(metadata.partition, metadata.offset)


async def refused_within(client: httpx.AsyncClient, path: str, seconds: float) -> httpx.Response:
    """Read `path` until it is refused with 401, for at most `seconds`; the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(path)
        if response.status_code == 401 or time.monotonic() >= deadline:
            return response
        await asyncio.sleep(0.02)


async def outcomes_reader(seen: set[str]) -> tuple[AIOKafkaConsumer, asyncio.Task[None]]:
    """Collects the `record` of every outcome published from now on into `seen`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=SETTINGS.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = await topic_partitions(consumer, OUTCOMES_TOPIC)
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)

    async def read() -> None:
        async for message in consumer:
            seen.add(orjson.loads(message.value)["record"])

    return consumer, asyncio.create_task(read())
