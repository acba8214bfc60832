"""Queries at two sizes in the same run: each filter of `GET .../transactions`, and the prefix listings and
sums, on a tenant with 1,000,000 transactions and 100,000 accounts against one with 10,000 and 1,000.

The rows are generated inside PostgreSQL (set-based), in the live projection, for tenants created through the
log; they are not on the log themselves, like the other scale data of the benchmarks.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from bench import tools
from bench.stack import Bench
from tools.local import say

OFFSET_BASE = 1_000_000  # past the tenants' own records on the log
SHAPES = {
    "page": "",
    "account": "account=acct-7",
    "reference": "reference=ref-{mid}",
    "status": "status=rejected",
    "metadata (one match)": "metadata.order={mid}",
    "time range": "since=2026-01-01T01:00:00Z&until=2026-01-01T02:00:00Z",
}


async def load(conn: asyncpg.Connection, tenant: str, transactions: int, accounts: int) -> None:
    """`transactions` transfers between `accounts` accounts (every tenth rejected), with their entries."""
    await conn.execute(
        """
        INSERT INTO transactions (tenant, id, status, reason, postings, metadata, reference, fingerprint,
                                  log_partition, log_offset, created_at, committed_at, kind)
        SELECT $1, 'q-' || i, CASE WHEN i % 10 = 0 THEN 'rejected' ELSE 'committed' END,
               CASE WHEN i % 10 = 0 THEN 'insufficient_funds' END,
               jsonb_build_array(jsonb_build_object('source', 'acct-' || (i % $3), 'destination',
                                                    'acct-' || ((i + 1) % $3), 'amount', 1, 'asset', 'USD/2')),
               jsonb_build_object('channel', CASE WHEN i % 2 = 0 THEN 'web' ELSE 'app' END, 'order', i::text),
               'ref-' || i, '', 0, $4 + i, timestamptz '2026-01-01' + i * interval '1 second',
               CASE WHEN i % 10 = 0 THEN NULL ELSE timestamptz '2026-01-01' + i * interval '1 second' END, 'transfer'
        FROM generate_series(1, $2) AS i
        """, tenant, transactions, accounts, OFFSET_BASE)
    await conn.execute(
        """
        INSERT INTO entries (tenant, account, asset, log_offset, leg, transaction_id, amount, balance_after,
                             committed_at, credits_total, entry_number)
        SELECT $1, 'acct-' || ((i + side) % $3), 'USD/2', $4 + i, side, 'q-' || i, CASE side WHEN 0 THEN -1 ELSE 1 END,
               0, timestamptz '2026-01-01' + i * interval '1 second', 0, i
        FROM generate_series(1, $2) AS i, generate_series(0, 1) AS side WHERE i % 10 <> 0
        """, tenant, transactions, accounts, OFFSET_BASE)
    await conn.execute(
        """
        INSERT INTO balances (tenant, account, asset, balance, log_partition, log_offset)
        SELECT $1, 'acct-' || a, 'USD/2', 0, 0, $3 FROM generate_series(0, $2 - 1) AS a
        """, tenant, accounts, OFFSET_BASE)


def measure(url: str, tenant: str, key: str, transactions: int, rate: int, duration_s: int) -> dict[str, Any]:
    """Each query shape of this tenant at `rate` requests/s (open loop)."""
    mid = transactions // 2
    rows = {}
    paths = {name: f"/transactions?limit=50&{query.format(mid=mid)}" for name, query in SHAPES.items()}
    paths |= {"accounts by prefix": "/accounts?prefix=acct-1&limit=50", "sums by prefix": "/balances?prefix=acct-12"}
    for name, path in paths.items():
        target = f"GET {url}/v1/tenants/{tenant}{path}\nAuthorization: Bearer {key}\n"
        rows[name] = tools.attack(target, rate, duration_s)
    return rows


async def queries(bench: Bench, owner: asyncpg.Connection) -> None:
    """Each query shape on a small and a large tenant, same run: a page should cost the same at both."""
    large_tx, large_accounts = (100_000, 10_000) if bench.quick else (1_000_000, 100_000)
    sizes = {"q-small": (10_000, 1_000), "q-large": (large_tx, large_accounts)}
    results: dict[str, Any] = {}
    for tenant, (transactions, accounts) in sizes.items():
        key = await bench.create_tenant(tenant)
        say(f"loading {transactions} transactions over {accounts} accounts for {tenant}")
        await load(owner, tenant, transactions, accounts)
        results[tenant] = {"transactions": transactions, "accounts": accounts, "key": key}
    for table in ("transactions", "entries", "balances"):
        await owner.execute(f"VACUUM (ANALYZE) {table}")
    for tenant, info in results.items():
        info["timings"] = measure(bench.url, tenant, info.pop("key"), info["transactions"], 100,
                                  2 if bench.quick else 4)
        for name, row in info["timings"].items():
            say(f"query {name} on {tenant}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"errors {row['errors']}")
    bench.results["queries"] = results
