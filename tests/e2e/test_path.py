"""The whole path: HTTP -> Kafka -> projector -> PostgreSQL -> HTTP, on the real services."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from tests.conftest import Tenant
from tests.e2e.helpers import balances, posting, produce, transfer
from tests.stack import opened, token, unique


async def test_deposit_from_world_shows_in_the_balance(tenant: Tenant) -> None:
    response = await transfer(tenant.client, tenant.id, posting("@world", "alice", 1000))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "committed"
    assert body["committed_at"] is not None
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 1000}
    assert await balances(tenant.client, tenant.id, "@world") == {"USD/2": -1000}


async def test_transfer_moves_money_between_accounts(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 1000))).status_code == 201
    response = await transfer(tenant.client, tenant.id, posting("alice", "bob", 350))
    assert response.status_code == 201, response.text
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 650}
    assert await balances(tenant.client, tenant.id, "bob") == {"USD/2": 350}


async def test_overdraft_is_rejected_with_insufficient_funds(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 100))).status_code == 201
    response = await transfer(tenant.client, tenant.id, posting("alice", "bob", 101))
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "insufficient_funds"
    tx_id = response.json()["transaction"]["id"]
    stored = await tenant.client.get(f"/v1/tenants/{tenant.id}/transactions/{tx_id}")
    assert stored.json()["status"] == "rejected"
    assert stored.json()["reason"] == "insufficient_funds"
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 100}
    assert await balances(tenant.client, tenant.id, "bob") == {}


async def test_repeated_idempotency_key_is_applied_once(tenant: Tenant) -> None:
    first = await transfer(tenant.client, tenant.id, posting("@world", "alice", 500), key="deposit-1")
    assert first.status_code == 201, first.text
    again = await transfer(tenant.client, tenant.id, posting("@world", "alice", 500), key="deposit-1")
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 500}


async def test_concurrent_repeats_of_one_key_are_decided_once(tenant: Tenant) -> None:
    sends = [transfer(tenant.client, tenant.id, posting("@world", "alice", 7), key="burst", wait=False)
             for _ in range(10)]
    responses = await asyncio.gather(*sends)
    assert {r.status_code for r in responses} <= {200, 202}
    last = max((r.json()["position"] for r in responses if r.status_code == 202), key=lambda t: opened(tenant.id, t))
    assert await balances(tenant.client, tenant.id, "alice", min_position=last) == {"USD/2": 7}


async def test_idempotency_key_with_a_different_body_conflicts(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="k")).status_code == 201
    response = await transfer(tenant.client, tenant.id, posting("@world", "alice", 6), key="k")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 5}


async def test_malformed_event_is_recorded_invalid_and_the_next_one_commits(
    tenant: Tenant, producer: AIOKafkaProducer, db: object
) -> None:
    key = tenant.id.encode()
    garbage = await produce(producer, key, b"{this is not json")
    bad_id = unique("bad")
    salvageable = await produce(producer, key, {"v": 1, "id": bad_id, "tenant": tenant.id,
                                                "postings": [posting("@world", "alice", 1.5)]})  # type: ignore[arg-type]
    good_id = unique("good")
    good = await produce(producer, key, {"v": 1, "id": good_id, "tenant": tenant.id,
                                         "postings": [posting("@world", "alice", 42)]})
    assert await balances(tenant.client, tenant.id, "alice", min_position=token(tenant.id, good)) == {"USD/2": 42}
    recorded = await tenant.client.get(f"/v1/tenants/{tenant.id}/transactions/{bad_id}")
    assert recorded.status_code == 200, recorded.text
    assert (recorded.json()["status"], recorded.json()["reason"]) == ("rejected", "invalid")
    committed = await tenant.client.get(f"/v1/tenants/{tenant.id}/transactions/{good_id}")
    assert committed.json()["status"] == "committed"
    row = await db.fetchrow("SELECT error FROM invalid_events WHERE log_partition = $1 AND log_offset = $2",  # type: ignore[attr-defined]
                            *garbage)
    assert row is not None and "JSON" in row["error"]
    # The record whose tenant and id were readable is a transaction at its own position, not an event.
    assert recorded.json()["position"] == token(tenant.id, salvageable)
    assert await db.fetchval("SELECT count(*) FROM invalid_events WHERE log_partition = $1 AND log_offset = $2",  # type: ignore[attr-defined]
                             *salvageable) == 0
