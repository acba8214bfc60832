"""Balance reads at a data size (`make bench`, steps `reads`, `held` and `large`): open loop, vegeta."""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg

from bench import data, tools
from bench.stack import PRODUCE_CONCURRENCY_MAX, Bench
from client import LedgerProducer
from ledger.requests import Posting
from tools.local import say


def read_targets(bench: Bench, accounts: int, count: int = 20_000, suffix: str = "") -> str:
    rng = random.Random(1)
    lines = []
    for _ in range(count):
        i = rng.randint(1, accounts)
        tenant = f"bench-{i % 10:02d}"
        lines.append(f"GET {bench.url}/v1/tenants/{tenant}/accounts/acct-{i}{suffix}\n"
                     f"Authorization: Bearer {bench.keys[tenant]}\n")
    return "\n".join(lines) + "\n"


def reads(bench: Bench, accounts: int, label: str, rates: list[int]) -> None:
    targets = read_targets(bench, accounts)
    tools.attack(targets, 200, 2)  # warm every pooled connection's prepared statements
    rows = []
    for rate in rates:
        row = tools.attack(targets, rate, bench.duration_s)
        row["accounts"] = accounts
        rows.append(row)
        say(f"{label} @ {rate}/s: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, errors {row['errors']}")
    bench.results[label] = rows


async def hold_everything(bench: Bench, owner: asyncpg.Connection, accounts: int) -> None:
    """An open hold (of 1) on every account the reads look at, for reads of accounts with holds."""
    async with LedgerProducer(bench.bootstrap, follow_outcomes=False, topic=bench.topic) as ledger:
        for first in range(1, accounts + 1, PRODUCE_CONCURRENCY_MAX):
            await asyncio.gather(*[
                ledger.hold(data.TENANTS[i % 10], [Posting(f"acct-{i}", "@holds", 1, "USD/2")],
                            expires_in_s=86_400)
                for i in range(first, min(accounts + 1, first + PRODUCE_CONCURRENCY_MAX))])
    await bench.caught_up(owner)
    held = await owner.fetchval("SELECT count(*) FROM balances WHERE held > 0 AND account LIKE 'acct-%'")
    say(f"{held} accounts with an open hold")


async def reads_held(bench: Bench, owner: asyncpg.Connection, accounts: int) -> None:
    await hold_everything(bench, owner, accounts)
    reads(bench, accounts, "reads_10k_held", [1000])


async def large(bench: Bench, owner: asyncpg.Connection, small: int) -> None:
    large = 1_000_000
    say(f"loading up to {large} accounts x 10 entries")
    started = time.monotonic()
    await data.load_accounts(owner, small + 1, large, 10)
    await data.settle(owner)
    bench.results["load_1m_seconds"] = round(time.monotonic() - started, 1)
    reads(bench, large, "reads_1m", [1000])
