"""Issue 24's growth (`make bench-growth`, step `growth`): what a waited write costs as the ledger grows, on
the fresh database and then holding 2M and 5M transactions in the post-mortem's shape (10 tenants of 10,000
wallets; a deposit and a payment each, so 4 entries a transaction), appended to the log and projected as a
producer service's would be. Each measurement is the `waited` step's (64 connections of `wait=true`
deposits, twice, the second reported), PostgreSQL's CPU per write set against the fresh database's: issue 24
wants it within 1.5x at 2M. About 20 minutes, most of it projecting 5M transactions.
"""

from __future__ import annotations

import asyncpg

from bench import postmortem, waited
from bench.stack import Bench
from tools.local import say

HELD = (2_000_000, 5_000_000)
WALLETS = 10_000


async def growth(bench: Bench, owner: asyncpg.Connection) -> None:
    keys = await postmortem.keys_for(bench.url, bench.env["LEDGER_ADMIN_TOKEN"])
    tenant = postmortem.TENANTS[0]
    fresh = waited.measured(bench, tenant, keys[tenant])
    say(waited.lines(fresh, "waited writes on the fresh database")[0])
    rows = [{"transactions": 0, "measured": fresh}]
    held = 0
    for target in HELD:
        per_tenant = (target - held) // len(keys)
        appended_s, projected_s = await postmortem.loaded(bench, owner, WALLETS, per_tenant, held, 3600)
        held = target
        size = await owner.fetchval("SELECT pg_database_size(current_database())")
        at = waited.measured(bench, tenant, keys[tenant])
        rows.append({"transactions": held, "appended_s": round(appended_s, 1),
                     "projected_after_s": round(projected_s, 1), "database_bytes": size, "measured": at})
        say(f"{held:,} transactions held ({size / 2**30:.1f} GiB; appended in {appended_s:.0f} s, projected "
            f"{projected_s:.0f} s after)")
        for line in waited.scale_lines(at, fresh, held):
            say(line)
    bench.results["growth"] = rows
