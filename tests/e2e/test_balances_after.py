"""Contract v3: a committed write's answer and `GET .../transactions/{id}` carry `balances_after`, every touched
account's posted balance right after it."""

from __future__ import annotations

from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import funded, post


async def test_a_committed_write_shows_every_touched_balance_right_after_it(tenant: Tenant) -> None:
    await funded(tenant, 100)
    paid = await transfer(tenant.client, tenant.id, posting("alice", "bob", 30), posting("alice", "carol", 5),
                          posting("bob", "carol", 10), key="pay-1")
    assert paid.status_code == 201, paid.text
    expected = {"alice": {"USD/2": 65}, "bob": {"USD/2": 20}, "carol": {"USD/2": 15}}
    assert paid.json()["balances_after"] == expected
    # Later writes do not change what it shows: the balances right after it, not now.
    assert (await transfer(tenant.client, tenant.id, posting("alice", "bob", 1))).status_code == 201
    shown = (await tenant.client.get(tenant.path(f"/transactions/{paid.json()['id']}"))).json()
    assert shown["balances_after"] == expected
    repeat = await transfer(tenant.client, tenant.id, posting("alice", "bob", 30), posting("alice", "carol", 5),
                            posting("bob", "carol", 10), key="pay-1")
    assert repeat.status_code == 200 and repeat.json()["balances_after"] == expected
    reversal = await post(tenant, f"/transactions/{paid.json()['id']}/reverse")
    assert reversal.json()["balances_after"] == {"alice": {"USD/2": 99}, "bob": {"USD/2": 1}, "carol": {"USD/2": 0}}


async def test_a_rejected_write_and_a_hold_show_none(tenant: Tenant) -> None:
    refused = await transfer(tenant.client, tenant.id, posting("alice", "bob", 5))
    assert refused.status_code == 409 and "balances_after" not in refused.json()["transaction"]
    await funded(tenant, 10)
    held = await post(tenant, "/holds", {"postings": [posting("alice", "bob", 5)]})
    assert held.status_code == 201 and "balances_after" not in held.json()


async def test_a_batchs_answer_shows_each_members_balances_after(tenant: Tenant) -> None:
    # Found by review: the batch answers were built without them.
    await funded(tenant, 100)
    answer = await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": "true"}, json={
        "atomic": True, "transactions": [{"postings": [posting("alice", "bob", 10)]},
                                         {"postings": [posting("alice", "bob", 5)]}]})
    assert [t["balances_after"] for t in answer.json()["transactions"]] == [
        {"alice": {"USD/2": 90}, "bob": {"USD/2": 10}}, {"alice": {"USD/2": 85}, "bob": {"USD/2": 15}}]
