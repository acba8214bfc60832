"""Contract v3's conditions on a write, through the API: account versions, `if_version`, `assert`,
`amount_max`, on transfers, holds and batch members, and tried as an attacker would."""

from __future__ import annotations

from typing import Any

from ops.verify import verify
from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import code
from tests.stack import SETTINGS, TRANSACTIONS_TOPIC

USD = "USD/2"


def at_most(source: str, destination: str, amount_max: int) -> dict[str, Any]:
    return {"source": source, "destination": destination, "amount_max": amount_max, "asset": USD}


async def account(tenant: Tenant, address: str) -> dict[str, Any]:
    answer = await tenant.client.get(tenant.path(f"/accounts/{address}"))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_versions_count_changes_and_if_version_is_optimistic_concurrency(tenant: Tenant) -> None:
    assert (await account(tenant, "alice"))["version"] == 0
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 100))).status_code == 201
    alice = await account(tenant, "alice")
    assert alice["version"] == 1
    paid = await transfer(tenant.client, tenant.id, posting("alice", "bob", 10), if_version={"alice": 1, "bob": 0})
    assert paid.status_code == 201, paid.text
    stale = await transfer(tenant.client, tenant.id, posting("alice", "bob", 10), if_version={"alice": 1})
    assert code(stale) == (409, "version_conflict")
    assert stale.json()["transaction"]["status"] == "rejected"
    assert [(await account(tenant, a))["version"] for a in ("alice", "bob")] == [2, 1]
    # A condition on an account the transaction does not touch, and on a system account.
    world = (await account(tenant, "@world"))["version"]
    other = await transfer(tenant.client, tenant.id, posting("alice", "carol", 1),
                           if_version={"nobody": 0, "@world": world})
    assert other.status_code == 201, other.text
    # A snapshot read and the account listing show versions too.
    snap = await tenant.client.get(tenant.path("/accounts"), params=[("address", "alice"), ("address", "zed")])
    assert [a["version"] for a in snap.json()["accounts"]] == [3, 0]
    listing = await tenant.client.get(tenant.path("/accounts"), params={"prefix": "car"})
    assert [a["version"] for a in listing.json()["accounts"]] == [1]


async def test_a_policy_and_a_hold_move_versions(tenant: Tenant) -> None:
    put = await tenant.client.put(tenant.path("/accounts/dora"), params={"wait": "true"},
                                  json={"metadata": {"kind": "wallet"}})
    assert put.status_code == 201, put.text
    assert (await account(tenant, "dora"))["version"] == 1
    assert (await transfer(tenant.client, tenant.id, posting("@world", "dora", 50))).status_code == 201
    hold = await tenant.client.post(tenant.path("/holds"), params={"wait": "true"},
                                    json={"postings": [posting("dora", "shop", 20)], "if_version": {"dora": 2}})
    assert hold.status_code == 201, hold.text
    assert [(await account(tenant, a))["version"] for a in ("dora", "shop")] == [3, 1]
    void = await tenant.client.post(tenant.path(f"/holds/{hold.json()['id']}/void"), params={"wait": "true"})
    assert void.status_code == 201, void.text
    assert [(await account(tenant, a))["version"] for a in ("dora", "shop")] == [4, 2]
    dora = await account(tenant, "dora")
    assert dora["metadata"] == {"kind": "wallet"} and dora["balances"] == {USD: 50}


async def test_assert_bounds_balances_after_the_write(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "erin", 100))).status_code == 201
    refused = await transfer(tenant.client, tenant.id, posting("erin", "fred", 60),
                             **{"assert": [{"account": "erin", "asset": USD, "min": 50}]})
    assert code(refused) == (409, "assertion_failed")
    done = await transfer(tenant.client, tenant.id, posting("erin", "fred", 50),
                          **{"assert": [{"account": "erin", "asset": USD, "min": 50, "max": 50},
                                        {"account": "fred", "asset": USD, "max": 50},
                                        {"account": "@world", "asset": USD, "max": -100}]})
    assert done.status_code == 201, done.text
    assert done.json()["balances_after"] == {"erin": {USD: 50}, "fred": {USD: 50}}
    assert (await account(tenant, "erin"))["balances"] == {USD: 50}


async def test_amount_max_moves_what_is_available(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "gus", 70))).status_code == 201
    hold = await tenant.client.post(tenant.path("/holds"), params={"wait": "true"},
                                    json={"postings": [posting("gus", "x", 20)]})
    assert hold.status_code == 201
    swept = await transfer(tenant.client, tenant.id, at_most("gus", "hal", 1_000))
    assert swept.status_code == 201, swept.text
    assert swept.json()["postings"] == [posting("gus", "hal", 50)]
    fetched = await tenant.client.get(tenant.path(f"/transactions/{swept.json()['id']}"))
    assert fetched.json()["postings"] == [posting("gus", "hal", 50)]
    assert fetched.json()["balances_after"] == {"gus": {USD: 20}, "hal": {USD: 50}}
    empty = await transfer(tenant.client, tenant.id, at_most("gus", "hal", 5))
    assert empty.status_code == 201, empty.text
    assert empty.json()["postings"] == [posting("gus", "hal", 0)]
    reserved = await tenant.client.post(tenant.path("/holds"), params={"wait": "true"},
                                        json={"postings": [at_most("hal", "ivy", 80)]})
    assert reserved.status_code == 201, reserved.text
    assert reserved.json()["postings"] == [posting("hal", "ivy", 50)]
    assert (await account(tenant, "hal"))["held"] == {USD: 50}


async def test_a_failed_condition_fails_an_atomic_batch_whole(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "jo", 100))).status_code == 201
    batch = await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": "true"}, json={
        "atomic": True, "transactions": [
            {"postings": [posting("jo", "kim", 10)], "if_version": {"jo": 1}},
            {"postings": [posting("jo", "lee", 10)], "assert": [{"account": "jo", "asset": USD, "min": 85}]}]})
    assert batch.status_code == 200, batch.text
    assert [(t["status"], t["reason"]) for t in batch.json()["transactions"]] == [("rejected", "assertion_failed")] * 2
    assert (await account(tenant, "jo"))["balances"] == {USD: 100}
    loose = await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": "true"}, json={
        "transactions": [{"postings": [posting("jo", "kim", 10)], "if_version": {"jo": 1}},
                         {"postings": [at_most("jo", "lee", 1_000)], "if_version": {"jo": 1}}]})
    assert [t["status"] for t in loose.json()["transactions"]] == ["committed", "rejected"]


async def test_hostile_conditions_are_refused_with_422_and_append_nothing(tenant: Tenant) -> None:
    base = [posting("@world", "mo", 1)]
    bodies: list[dict[str, Any]] = [
        {"postings": [at_most("@world", "mo", 5)]},
        {"postings": base, "if_version": {"mo": 2**63}},
        {"postings": base, "if_version": {"mo": -1}},
        {"postings": base, "if_version": {"mo\u0000": 1}},
        {"postings": base, "if_version": {"mo": "1"}},
        {"postings": base, "if_version": {"a" * 129: 1}},
        {"postings": base, "assert": [{"account": "mo", "asset": USD, "min": 2**64}]},
        {"postings": base, "assert": [{"account": "mo", "asset": USD, "min": 3, "max": 2}]},
        {"postings": base, "assert": [{"account": "mo", "asset": "usd", "min": 0}]},
        {"postings": base, "assert": [{"account": "mo", "asset": USD}] * 129},
        {"postings": base, "if_version": {f"a{i}": 0 for i in range(100)},
         "assert": [{"account": "mo", "asset": USD}] * 29},
    ]
    for body in bodies:
        answer = await tenant.client.post(tenant.path("/transactions"), params={"wait": "true"}, json=body)
        assert code(answer) == (422, "invalid_request"), (str(body)[:100], answer.text)
    void = await tenant.client.post(tenant.path("/holds/nothing/void"), json={"if_version": {"mo": 0}})
    assert code(void) == (422, "invalid_request")
    assert (await account(tenant, "mo"))["version"] == 0


async def test_a_replay_of_the_log_decides_every_condition_alike(tenant: Tenant) -> None:
    """Versions, amount_max and failed conditions, rebuilt from the log by `ledger verify`, match the projection."""
    assert (await transfer(tenant.client, tenant.id, posting("@world", "nia", 40))).status_code == 201
    for body in ({"postings": [at_most("nia", "oz", 25)], "if_version": {"nia": 1}},
                 {"postings": [posting("nia", "oz", 5)], "if_version": {"nia": 1}},
                 {"postings": [at_most("nia", "pia", 100)], "assert": [{"account": "nia", "asset": USD, "max": 0}]},
                 {"postings": [posting("oz", "pia", 1)], "assert": [{"account": "oz", "asset": USD, "min": 30}]}):
        answer = await tenant.client.post(tenant.path("/transactions"), params={"wait": "true"}, json=body)
        assert answer.status_code in (201, 409), answer.text
    hold = await tenant.client.post(tenant.path("/holds"), params={"wait": "true"},
                                    json={"postings": [at_most("pia", "qi", 100)], "expires_in_s": 1})
    assert hold.status_code == 201, hold.text
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC, [tenant.id])
    assert verdict.identical, verdict.differences
    assert verdict.replayed >= 6
