"""Database statements per balance read (`make bench`, step `round_trips`), from pg_stat_statements."""

from __future__ import annotations

import asyncpg

from bench import tools
from bench.reads import read_targets
from bench.stack import Bench
from tools.local import say


async def round_trips(bench: Bench, owner: asyncpg.Connection, accounts: int) -> None:
    targets = read_targets(bench, accounts)
    tools.attack(targets, 200, 2)
    await owner.execute("SELECT pg_stat_statements_reset()")
    row = tools.attack(targets, 500, 4)
    calls = await owner.fetch(
        "SELECT query, calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
        "WHERE r.rolname = 'ledger_api' ORDER BY calls DESC")
    total = sum(r["calls"] for r in calls)
    bench.results["round_trips"] = {
        "requests": row["requests"], "statements": total,
        "per_request": round(total / row["requests"], 3),
        "top": [(r["query"][:80], r["calls"]) for r in calls[:3]],
    }
    say(f"round trips per balance read: {total} statements / {row['requests']} requests")
