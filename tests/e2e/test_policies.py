"""Account policies over HTTP and straight through Kafka (contract v2, "Account policies")."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Tenant
from tests.e2e.helpers import posting, produce, transfer
from tests.e2e.test_holds import account, code, funded, post
from tests.stack import token


async def put(tenant: Tenant, address: str, body: dict[str, Any] | None, wait: bool = True) -> httpx.Response:
    return await tenant.client.put(tenant.path(f"/accounts/{address}"), params={"wait": str(wait).lower()},
                                   json=body)


async def test_a_policy_shows_on_the_account_and_its_limit_lets_available_go_below_zero(tenant: Tenant) -> None:
    await funded(tenant)
    set_ = await put(tenant, "alice", {"metadata": {"tier": "gold"}, "overdraft_limit": {"USD/2": 50}})
    assert set_.status_code == 201, set_.text
    assert (set_.json()["metadata"], set_.json()["overdraft_limit"], set_.json()["frozen"]) == (
        {"tier": "gold"}, {"USD/2": 50}, False)
    assert (await transfer(tenant.client, tenant.id, posting("alice", "bob", 150))).status_code == 201
    assert code(await transfer(tenant.client, tenant.id, posting("alice", "bob", 1))) == (409, "insufficient_funds")
    body = await account(tenant, "alice")
    assert (body["balances"], body["available"], body["overdraft_limit"]) == (
        {"USD/2": -50}, {"USD/2": -50}, {"USD/2": 50})
    assert code(await put(tenant, "alice", {})) == (409, "overdraft_in_use")
    assert (await account(tenant, "nobody-yet"))["frozen"] is False


async def test_a_frozen_account_takes_part_in_nothing_new_and_its_holds_still_release(tenant: Tenant) -> None:
    await funded(tenant)
    hold_id = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]})).json()["id"]
    assert (await put(tenant, "alice", {"frozen": True})).json()["frozen"] is True
    assert code(await transfer(tenant.client, tenant.id, posting("alice", "bob", 1))) == (409, "account_frozen")
    assert code(await transfer(tenant.client, tenant.id, posting("@world", "alice", 1))) == (409, "account_frozen")
    assert code(await post(tenant, "/holds", {"postings": [posting("alice", "shop", 1)]})) == (409, "account_frozen")
    assert code(await post(tenant, f"/holds/{hold_id}/capture")) == (409, "account_frozen")
    assert (await post(tenant, f"/holds/{hold_id}/void")).json()["status"] == "voided"
    assert (await account(tenant, "alice"))["available"] == {"USD/2": 100}
    assert (await put(tenant, "alice", {"frozen": False})).status_code == 201
    assert (await transfer(tenant.client, tenant.id, posting("alice", "bob", 1))).status_code == 201


async def test_bad_policies_are_4xx(tenant: Tenant) -> None:
    for body in ({"frozen": "yes"}, {"overdraft_limit": {"usd": 5}}, {"overdraft_limit": {"USD/2": -1}},
                 {"overdraft_limit": {"USD/2": 2**63}}, {"overdraft_limit": []}, {"metadata": {"k": 1}},
                 {"metadata": {"k": "\u0000"}}, {"unknown": 1}, {"overdraft_limit": {f"A{i}": 1 for i in range(65)}}):
        assert (await put(tenant, "alice", body)).status_code == 422, body
    assert (await put(tenant, "@world", {"frozen": True})).status_code == 422
    assert (await put(tenant, "bad%20address", {})).status_code == 422
    pending = await put(tenant, "alice", {"frozen": True}, wait=False)
    assert (pending.status_code, pending.json()["status"]) == (202, "pending")


async def test_a_policy_straight_through_kafka_applies_in_log_order(tenant: Tenant, producer: Any) -> None:
    await funded(tenant)
    key = tenant.id.encode()
    await produce(producer, key, {"v": 1, "kind": "policy", "id": "p1", "tenant": tenant.id, "account": "alice",
                                  "frozen": True})
    blocked = await produce(producer, key, {"v": 1, "id": "t-frozen", "tenant": tenant.id,
                                            "postings": [posting("alice", "bob", 1)]})
    await produce(producer, key, {"v": 1, "kind": "policy", "id": "p2", "tenant": tenant.id, "account": "alice"})
    passed = await produce(producer, key, {"v": 1, "id": "t-thawed", "tenant": tenant.id,
                                           "postings": [posting("alice", "bob", 1)]})
    first = (await tenant.client.get(tenant.path("/transactions/t-frozen"),
                                     params={"min_position": token(tenant.id, blocked), "timeout_ms": 5000})).json()
    second = (await tenant.client.get(tenant.path("/transactions/t-thawed"),
                                      params={"min_position": token(tenant.id, passed), "timeout_ms": 5000})).json()
    assert (first["reason"], second["status"]) == ("account_frozen", "committed")
