"""Contract v3's snapshot reads: several accounts at one position of the log, in one read. The bank check
(Jepsen's): while transfers move money among a fixed set of accounts, every snapshot sees the same total."""

from __future__ import annotations

import asyncio
import random

from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import code
from tests.stack import opened

ACCOUNTS = [f"bank-{n}" for n in range(5)]
TOTAL = 5_000


async def snapshot(tenant: Tenant, *addresses: str, **params: str) -> dict[str, object]:
    answer = await tenant.client.get(tenant.path("/accounts"), params=[("address", a) for a in addresses]
                                     + list(params.items()))
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def test_a_snapshot_answers_the_accounts_asked_in_order_at_one_position(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 7))).status_code == 201
    last = await transfer(tenant.client, tenant.id, posting("alice", "bob", 2))
    body = await snapshot(tenant, "bob", "nobody", "alice", "bob", min_position=last.json()["position"])
    accounts = body["accounts"]
    assert isinstance(accounts, list)
    assert [(a["address"], a["balances"]) for a in accounts] == [
        ("bob", {"USD/2": 2}), ("nobody", {}), ("alice", {"USD/2": 5}), ("bob", {"USD/2": 2})]
    assert isinstance(body["position"], str)
    assert opened(tenant.id, body["position"]) >= opened(tenant.id, last.json()["position"])


async def test_bad_snapshot_reads_are_422(tenant: Tenant) -> None:
    for params in ([("address", ".")], [("address", "a")] * 101, [("address", "a"), ("prefix", "a")],
                   [("address", "a"), ("limit", "5")], [("address", "a"), ("min_position", "x")]):
        answer = await tenant.client.get(tenant.path("/accounts"), params=params)
        assert code(answer) == (422, "invalid_request"), (params[:2], answer.text)


async def test_every_snapshot_sees_the_banks_total_while_money_moves(tenant: Tenant) -> None:
    for account in ACCOUNTS:
        funded = await transfer(tenant.client, tenant.id, posting("@world", account, TOTAL // len(ACCOUNTS)))
        assert funded.status_code == 201, funded.text
    rng = random.Random(20261204)
    stop = asyncio.Event()

    async def mover() -> int:
        moved = 0
        while not stop.is_set():
            source, destination = rng.sample(ACCOUNTS, 2)
            answer = await transfer(tenant.client, tenant.id, posting(source, destination, rng.randint(1, 50)),
                                    wait=False)
            moved += answer.status_code == 202
        return moved

    movers = [asyncio.create_task(mover()) for _ in range(4)]
    totals = []
    positions = set()
    try:
        for _ in range(60):
            body = await snapshot(tenant, *ACCOUNTS)
            accounts = body["accounts"]
            assert isinstance(accounts, list)
            totals.append(sum(a["balances"].get("USD/2", 0) for a in accounts))
            positions.add(body["position"])
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        moved = sum(await asyncio.gather(*movers))
    assert moved > 50 and len(positions) > 5, (moved, len(positions))  # the snapshots saw money moving
    assert set(totals) == {TOTAL}, sorted(set(totals))
