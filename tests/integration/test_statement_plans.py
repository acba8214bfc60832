"""Contract v3: a statement costs a constant number of indexed lookups, whatever the period's length. The very
SQL `api_statement` runs, EXPLAIN ANALYZEd on an account of 1,500 and of 150,000 entries: the rows it touches do
not grow with the history (two lookups a side, each one row)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from tests.stack import unique

# The lookups of api_statement (infra/functions/api_statement.sql), with a bound in the middle of the history.
BOUND = ("SELECT x.log_offset FROM transactions x WHERE x.tenant = $1 AND x.created_at >= $2"
         " ORDER BY x.created_at, x.log_offset LIMIT 1")
LAST_BEFORE = ("SELECT e.balance_after, e.credits_total, e.entry_number FROM entries e"
               " WHERE e.tenant = $1 AND e.account = 'alice' AND e.asset = 'USD/2' AND e.log_offset < $2"
               " ORDER BY e.log_offset DESC, e.leg DESC LIMIT 1")
FIRST = ("SELECT f.committed_at FROM entries f WHERE f.tenant = $1 AND f.account = 'alice' AND f.asset = 'USD/2'"
         " ORDER BY f.log_offset, f.leg LIMIT 1")


async def history(conn: asyncpg.Connection, schema: str, tenant: str, entries: int) -> None:
    """`entries` deposits into alice, one a second, written as the projector would (running totals)."""
    await conn.execute(f"""
        INSERT INTO {schema}.transactions (tenant, id, status, postings, metadata, fingerprint, log_partition,
                                           log_offset, created_at, committed_at)
        SELECT $1, 'tx' || n, 'committed', '[]', '{{}}', '\\x00', 0, n,
               timestamptz '2026-01-01' + n * interval '1 second', timestamptz '2026-01-01' + n * interval '1 second'
        FROM generate_series(1, $2) AS n""", tenant, entries)
    await conn.execute(f"""
        INSERT INTO {schema}.entries (tenant, account, asset, log_offset, leg, transaction_id, amount, balance_after,
                                      committed_at, credits_total, entry_number)
        SELECT $1, 'alice', 'USD/2', n, 1, 'tx' || n, 5, 5 * n, timestamptz '2026-01-01' + n * interval '1 second',
               5 * n, n
        FROM generate_series(1, $2) AS n""", tenant, entries)
    await conn.execute(f"ANALYZE {schema}.transactions")
    await conn.execute(f"ANALYZE {schema}.entries")


def rows_touched(plan: list[dict[str, Any]]) -> int:
    """Rows every node of the plan produced, and those it read and dropped (filters)."""
    def walk(node: dict[str, Any]) -> int:
        own = int(node.get("Actual Rows", 0) * node.get("Actual Loops", 1)) + int(node.get("Rows Removed by Filter", 0))
        return own + sum(walk(child) for child in node.get("Plans", []))
    return walk(plan[0]["Plan"])


async def touched(conn: asyncpg.Connection, schema: str, tenant: str, entries: int) -> list[int]:
    await conn.execute(f"SET search_path = {schema}, public")
    middle = await conn.fetchval("SELECT timestamptz '2026-01-01' + $1 * interval '1 second'", entries // 2)
    offset = entries // 2
    counts = []
    for sql, args in ((BOUND, (tenant, middle)), (LAST_BEFORE, (tenant, offset)), (FIRST, (tenant,))):
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        counts.append(rows_touched(json.loads(raw) if isinstance(raw, str) else raw))
    return counts


async def test_a_statement_touches_as_many_rows_at_150000_entries_as_at_1500(
        scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    small, large = unique("small"), unique("large")
    await history(conn, schema, small, 1_500)
    await history(conn, schema, large, 150_000)
    at_small = await touched(conn, schema, small, 1_500)
    at_large = await touched(conn, schema, large, 150_000)
    assert at_large == at_small, (at_small, at_large)
    assert max(at_large) <= 4, at_large  # an index lookup and its limit: a row or two per node
