"""Bulk data for the scale benchmarks, generated inside PostgreSQL (set-based, no round trip per row).

These rows do not come from the log: they exist only in the benchmark's own database.
"""

from __future__ import annotations

import contextlib

import asyncpg

TENANTS = [f"bench-{i:02d}" for i in range(10)]
DEEP_ACCOUNT = "deep"


async def load_accounts(conn: asyncpg.Connection, first: int, last: int, entries_per_account: int) -> None:
    """Accounts `acct-first..acct-last` spread over the tenants, each with its entries and balance."""
    await conn.execute(
        """
        INSERT INTO balances (tenant, account, asset, balance, log_partition, log_offset, credits_total,
                              entries_count)
        SELECT 'bench-' || lpad((i % 10)::text, 2, '0'), 'acct-' || i, 'USD/2', 100 * $3, 0, $3, 100 * $3, $3
        FROM generate_series($1::bigint, $2::bigint) AS i
        ON CONFLICT DO NOTHING
        """, first, last, entries_per_account)
    await conn.execute(
        """
        INSERT INTO entries (tenant, account, asset, log_offset, leg, transaction_id, amount, balance_after,
                             committed_at, credits_total, entry_number)
        SELECT 'bench-' || lpad((i % 10)::text, 2, '0'), 'acct-' || i, 'USD/2', j, 1, 'b-' || i || '-' || j,
               100, 100 * j, timestamptz '2026-01-01' + j * interval '1 second', 100 * j, j
        FROM generate_series($1::bigint, $2::bigint) AS i, generate_series(1, $3) AS j
        ON CONFLICT DO NOTHING
        """, first, last, entries_per_account)


async def load_deep_history(conn: asyncpg.Connection, depth: int) -> None:
    """One account with `depth` entries, for history pages far from the newest."""
    await conn.execute(
        """
        INSERT INTO entries (tenant, account, asset, log_offset, leg, transaction_id, amount, balance_after,
                             committed_at, credits_total, entry_number)
        SELECT 'bench-00', $2, 'USD/2', j, 1, 'd-' || j, 1, j, timestamptz '2026-01-01' + j * interval '1 ms', j, j
        FROM generate_series(1, $1) AS j
        ON CONFLICT DO NOTHING
        """, depth, DEEP_ACCOUNT)


async def settle(conn: asyncpg.Connection) -> None:
    """Let a bulk load's aftermath finish before anything is measured: statistics, the visibility map
    (autovacuum would otherwise vacuum the new rows during the read runs) and the dirty pages on disk."""
    await conn.execute("VACUUM (ANALYZE) balances")
    await conn.execute("VACUUM (ANALYZE) entries")
    # Not a superuser: the checkpointer spreads the writes over its own interval instead.
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")
