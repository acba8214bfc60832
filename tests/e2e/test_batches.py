"""Batches of transfers over HTTP and through the producer client (contract v2, "Batches")."""

from __future__ import annotations

from typing import Any

import httpx

from client import LedgerProducer
from ledger.requests import Posting
from tests.conftest import Tenant
from tests.e2e.helpers import posting
from tests.e2e.test_holds import account, funded
from tests.stack import SETTINGS


async def batch(tenant: Tenant, items: list[dict[str, Any]], atomic: bool = False, wait: bool = True) -> httpx.Response:
    return await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": str(wait).lower()},
                                    json={"transactions": items, "atomic": atomic})


async def test_a_batch_is_decided_item_by_item_in_order(tenant: Tenant) -> None:
    await funded(tenant, 10)
    answer = await batch(tenant, [{"postings": [posting("alice", "bob", 6)]},
                                  {"postings": [posting("alice", "bob", 6)]},
                                  {"postings": [posting("alice", "carol", 4)], "idempotency_key": "b-1"}])
    assert answer.status_code == 200, answer.text
    decided = [(t["status"], t.get("reason")) for t in answer.json()["transactions"]]
    assert decided == [("committed", None), ("rejected", "insufficient_funds"), ("committed", None)]
    assert (await account(tenant, "alice"))["balances"] == {"USD/2": 0}


async def test_an_atomic_batch_commits_all_or_nothing(tenant: Tenant) -> None:
    await funded(tenant, 10)
    failed = await batch(tenant, [{"postings": [posting("alice", "bob", 6)]},
                                  {"postings": [posting("alice", "bob", 6)]}], atomic=True)
    assert [(t["status"], t["reason"]) for t in failed.json()["transactions"]] == \
        [("rejected", "insufficient_funds")] * 2
    assert (await account(tenant, "alice"))["balances"] == {"USD/2": 10}
    done = await batch(tenant, [{"postings": [posting("alice", "bob", 6)]},
                                {"postings": [posting("alice", "carol", 4)]}], atomic=True)
    assert [t["status"] for t in done.json()["transactions"]] == ["committed", "committed"]
    assert (await account(tenant, "alice"))["balances"] == {"USD/2": 0}


async def test_a_batch_repeated_with_the_same_keys_replays(tenant: Tenant) -> None:
    await funded(tenant, 10)
    items = [{"postings": [posting("alice", "bob", 3)], "idempotency_key": f"k{i}"} for i in range(3)]
    first = await batch(tenant, items)
    again = await batch(tenant, items)
    assert [t["status"] for t in first.json()["transactions"]] == ["committed"] * 3
    originals = [t["id"] for t in first.json()["transactions"]]
    assert [t["replay_of"] for t in again.json()["transactions"]] == originals
    assert (await account(tenant, "alice"))["balances"] == {"USD/2": 1}


async def test_bad_batches_are_4xx(tenant: Tenant) -> None:
    one = {"postings": [posting("alice", "bob", 1)]}
    for body in ({"transactions": []}, {"transactions": [one] * 1001}, {"transactions": one},
                 {"transactions": [one], "atomic": "yes"}, {"transactions": [one], "extra": 1},
                 {"transactions": [{"postings": [posting("alice", "bob", 1)], "id": "mine"}]},
                 {"transactions": [{"postings": [posting("alice", "bob", 0)]}]}):
        response = await tenant.client.post(tenant.path("/transactions/batch"), json=body)
        assert response.status_code in (413, 422), (body, response.text)
    pending = await batch(tenant, [one, one], wait=False)
    assert pending.status_code == 202 and len(pending.json()["transactions"]) == 2


async def test_the_producer_client_sends_batches_too(tenant: Tenant) -> None:
    await funded(tenant, 10)
    async with LedgerProducer(SETTINGS.kafka_bootstrap, topic=SETTINGS.transactions_topic,
                              outcomes_topic=SETTINGS.outcomes_topic) as ledger:
        sent = await ledger.submit_batch(tenant.id, [[Posting("alice", "bob", 4, "USD/2")]] * 3, atomic=True)
        outcomes = [await ledger.outcome(s, 30) for s in sent]
    assert [(o["status"], o["reason"]) for o in outcomes] == [("rejected", "insufficient_funds")] * 3
    assert len({s.position for s in sent}) == 1
