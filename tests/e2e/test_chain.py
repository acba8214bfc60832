"""Contract v3's tamper-evident chain, checked as an auditor would: from the API alone, every committed
transaction's hash is recomputed and linked to the one before, up to the head `GET .../chain` names; a replay
yields the same chain (`ledger verify` compares them); a row changed behind the ledger's back is named."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg
import orjson

from ops.verify import chain_disagreements, verify
from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import funded, post
from tests.e2e.test_operators import ledger
from tests.stack import SETTINGS, TRANSACTIONS_TOPIC, Stack

GENESIS = "0" * 64


def recomputed(previous: str, shown: dict[str, Any]) -> str:
    canonical = orjson.dumps({k: shown[k] for k in ("id", "postings", "metadata", "reference", "committed_at")},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(previous.encode() + b"\n" + canonical).hexdigest()


async def committed(tenant: Tenant, ids: list[str]) -> list[dict[str, Any]]:
    shown = [(await tenant.client.get(tenant.path(f"/transactions/{i}"))).json() for i in ids]
    return [t for t in shown if t["status"] == "committed" and t.get("kind", "transfer") in
            ("transfer", "capture", "reverse")]


async def test_the_chain_recomputes_from_the_api_alone_and_a_replay_agrees(tenant: Tenant, stack: Stack) -> None:
    empty = (await tenant.client.get(tenant.path("/chain"))).json()
    assert empty == {"count": 0, "head": GENESIS, "position": None}
    ids = [(await transfer(tenant.client, tenant.id, posting("@world", "alice", 100))).json()["id"]]
    ids.append((await transfer(tenant.client, tenant.id, posting("alice", "bob", 7), metadata={"n": "é"},
                               reference="r1", key="k1")).json()["id"])
    batch = await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": "true"}, json={
        "atomic": True, "transactions": [{"postings": [posting("alice", "carol", 1)]},
                                         {"postings": [posting("bob", "carol", 2)]}]})
    ids += [t["id"] for t in batch.json()["transactions"]]
    held = await post(tenant, "/holds", {"postings": [posting("alice", "dave", 5)]})
    ids.append((await post(tenant, f"/holds/{held.json()['id']}/capture")).json()["id"])
    ids.append((await post(tenant, f"/transactions/{ids[1]}/reverse", {"amount": 3})).json()["id"])
    ids.append((await transfer(tenant.client, tenant.id, posting("zed", "bob", 1))).json()["transaction"]["id"])
    ids.append((await transfer(tenant.client, tenant.id, posting("alice", "bob", 7), metadata={"n": "é"},
                               reference="r1", key="k1")).json()["id"])  # a repeat: no new link
    links = {t["previous_hash"]: t for t in await committed(tenant, ids)}
    previous, count = GENESIS, 0
    while previous in links:  # follow the chain from the genesis, as an auditor would
        shown = links.pop(previous)
        assert shown["hash"] == recomputed(previous, shown), shown
        previous, count = shown["hash"], count + 1
    head = (await tenant.client.get(tenant.path("/chain"))).json()
    assert (head["count"], head["head"]) == (count, previous)
    assert count == 6 and links == {}, links  # the funding, the transfer, two batch items, the capture, the reversal
    assert await chain_disagreements(SETTINGS.database_url, [tenant.id]) == []
    run = await asyncio.to_thread(ledger, stack, "verify", "--chain", "--tenant", tenant.id)
    assert run.returncode == 0 and "every chain whole" in run.stdout, run.stdout
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC, [tenant.id])
    assert verdict.identical, verdict.differences  # the replay's hashes are the live ones


async def test_a_row_changed_behind_the_ledgers_back_is_named(tenant: Tenant, db: asyncpg.Pool,
                                                              stack: Stack) -> None:
    await funded(tenant, 10)
    paid = await transfer(tenant.client, tenant.id, posting("alice", "bob", 4))
    assert (await transfer(tenant.client, tenant.id, posting("alice", "bob", 1))).status_code == 201
    changed = "UPDATE transactions SET metadata = $3 WHERE tenant = $1 AND id = $2"
    async with db.acquire() as conn:
        await conn.execute("SELECT ledger_use_live()")
        await conn.execute(changed, tenant.id, paid.json()["id"], '{"to": "mallory"}')
        try:
            problems = await chain_disagreements(SETTINGS.database_url, [tenant.id])
            run = await asyncio.to_thread(ledger, stack, "verify", "--chain", "--tenant", tenant.id)
            assert run.returncode == 1 and f"CHAIN BROKEN — tenant {tenant.id!r}" in run.stdout, run.stdout
        finally:
            await conn.execute(changed, tenant.id, paid.json()["id"], "{}")
    assert len(problems) == 1 and tenant.id in problems[0] and paid.json()["id"] in problems[0], problems
    assert await chain_disagreements(SETTINGS.database_url, [tenant.id]) == []
    run = await asyncio.to_thread(ledger, stack, "verify", "--chain", "--tenant", tenant.id)
    assert run.returncode == 0 and "every chain whole" in run.stdout, run.stdout
