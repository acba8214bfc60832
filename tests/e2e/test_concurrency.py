"""50 concurrent HTTP writers moving money among 10 accounts: every committed transfer counts once,
every rejected one not at all, and the books balance."""

from __future__ import annotations

import asyncio
import random

from tests.conftest import Tenant
from tests.e2e.helpers import balances, posting, transfer

WRITERS = 50
TRANSFERS_PER_WRITER = 10
ACCOUNTS = [f"acct{i}" for i in range(10)]
SEED = 100


async def test_concurrent_writers_keep_the_books_exact(tenant: Tenant) -> None:
    seeded = await transfer(tenant.client, tenant.id, *[posting("@world", a, SEED) for a in ACCOUNTS])
    assert seeded.status_code == 201, seeded.text
    rng = random.Random(7)
    plans = [[(rng.choice(ACCOUNTS), rng.choice(ACCOUNTS), rng.randint(1, 60)) for _ in range(TRANSFERS_PER_WRITER)]
             for _ in range(WRITERS)]

    async def writer(plan: list[tuple[str, str, int]]) -> list[tuple[str, str, int, int]]:
        results = []
        for source, destination, amount in plan:
            if source == destination:
                continue
            response = await transfer(tenant.client, tenant.id, posting(source, destination, amount))
            results.append((source, destination, amount, response.status_code))
        return results

    outcomes = [r for rs in await asyncio.gather(*(writer(p) for p in plans)) for r in rs]
    statuses = {status for *_, status in outcomes}
    assert statuses <= {201, 409}, statuses
    assert 201 in statuses and 409 in statuses, "the mix should both commit and overdraw"
    expected = dict.fromkeys(ACCOUNTS, SEED)
    for source, destination, amount, status in outcomes:
        if status == 201:
            expected[source] -= amount
            expected[destination] += amount
    actual = {a: (await balances(tenant.client, tenant.id, a)).get("USD/2", 0) for a in ACCOUNTS}
    assert actual == expected
    assert all(v >= 0 for v in actual.values())
    assert sum(actual.values()) == SEED * len(ACCOUNTS)
    assert await balances(tenant.client, tenant.id, "@world") == {"USD/2": -SEED * len(ACCOUNTS)}
