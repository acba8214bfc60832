"""The API's balance cache against the real stack: written and read hard at once, every balance read existed
at the position it was read with, a `min_position` read never predates its position, the cache did serve
(its hits count in /metrics), and a listener that stops answering takes the cache out of service."""

from __future__ import annotations

import asyncio
import random
import re
import time

import asyncpg
import httpx

from api.progress import CACHE_FRESH_S
from tests.conftest import Tenant
from tests.e2e.helpers import posting
from tests.e2e.test_limits import backend_pid, stopped
from tests.stack import Stack, opened

ACCOUNTS = [f"hot-{n}" for n in range(6)]
SECONDS = 4.0
WRITERS = 6
READERS = 10


async def cache_hits(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    found = re.search(r'^ledger_api_balance_cache_reads_total\{result="hit"\} (\S+)$', text, re.M)
    assert found, "the cache's hits are not in /metrics"
    return float(found[1])


async def test_every_balance_read_while_writing_existed_at_its_position(stack: Stack, tenant: Tenant,
                                                                         db: asyncpg.Pool) -> None:
    rng = random.Random(20261128)
    written: dict[str, int] = {}  # the newest position (offset) of a write acknowledged, per account
    written_tokens: dict[str, str] = {}
    reads: list[tuple[str, int, int, int | None]] = []  # account, balance, offset read at, min offset asked
    deadline = time.monotonic() + SECONDS
    # On a loaded machine fewer reads fit in SECONDS: go on until there are enough to judge (bounded).
    hard_deadline = deadline + 30

    def running() -> bool:
        now = time.monotonic()
        return now < hard_deadline and (now < deadline or len(reads) <= 250)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as plain:
        hits_before = await cache_hits(plain)

        async def write() -> None:
            while running():
                account = rng.choice(ACCOUNTS)
                response = await tenant.client.post(tenant.path("/transactions"), json={
                    "postings": [posting("@world", account, rng.randint(1, 9))]})
                assert response.status_code == 202, response.text
                offset = opened(tenant.id, response.json()["position"]).offset
                if offset > written.get(account, -1):
                    written[account], written_tokens[account] = offset, response.json()["position"]

        async def read() -> None:
            while running():
                account = rng.choice(ACCOUNTS)
                asked = written.get(account) if rng.random() < 0.5 else None
                params = {"min_position": written_tokens[account]} if asked is not None else {}
                response = await tenant.client.get(tenant.path(f"/accounts/{account}"), params=params)
                assert response.status_code == 200, response.text
                body = response.json()
                if body["position"] is None:  # nothing applied on it yet: a stale read if it waited for a write
                    reads.append((account, 0, -1, asked))
                    continue
                reads.append((account, body["balances"]["USD/2"], opened(tenant.id, body["position"]).offset, asked))

        await asyncio.gather(*(write() for _ in range(WRITERS)), *(read() for _ in range(READERS)))
        hits = await cache_hits(plain) - hits_before
    await stack.caught_up()
    history = {(r["account"], r["log_offset"]): r["balance_after"] for r in await db.fetch(
        "SELECT account, log_offset, balance_after FROM entries WHERE tenant = $1", tenant.id)}
    assert len(reads) > 200, len(reads)
    stale = [r for r in reads if r[3] is not None and r[2] < r[3]]
    assert not stale, f"{len(stale)} reads with min_position answered from before it: {stale[:5]}"
    never = [r for r in reads if r[2] >= 0 and history.get((r[0], r[2])) != r[1]]
    assert not never, f"{len(never)} balances read never existed at their position: {never[:5]}"
    # The cache served a good share of them (every hit was checked like the rest above).
    assert hits > len(reads) / 10, (hits, len(reads))


async def test_a_listener_that_stops_answering_takes_the_cache_out_of_service(stack: Stack, tenant: Tenant,
                                                                              db: asyncpg.Pool) -> None:
    assert stack.api is not None
    path = tenant.path("/accounts/quiet")
    first = await tenant.client.post(tenant.path("/transactions"), params={"wait": "true"},
                                     json={"postings": [posting("@world", "quiet", 5)]})
    assert first.status_code == 201, first.text
    for _ in range(3):  # read, then served from the cache
        assert (await tenant.client.get(path)).json()["balances"] == {"USD/2": 5}
    pid = await backend_pid(f"ledger-api-listener:{stack.api.pid}")
    with stopped(pid):
        stopped_at = time.monotonic()
        response = await tenant.client.post(tenant.path("/transactions"),
                                            json={"postings": [posting("@world", "quiet", 2)]})
        assert response.status_code == 202, response.text
        while await db.fetchval("SELECT balance FROM balances WHERE tenant = $1 AND account = 'quiet'",
                                tenant.id) != 7:
            await asyncio.sleep(0.02)
        # Its notification cannot reach this API; past CACHE_FRESH_S of silence the cache is not used.
        await asyncio.sleep(max(0.0, stopped_at + CACHE_FRESH_S + 0.1 - time.monotonic()))
        assert (await tenant.client.get(path)).json()["balances"] == {"USD/2": 7}
