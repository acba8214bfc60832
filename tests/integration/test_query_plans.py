"""Every query shape the API runs is served by an index: EXPLAIN, with sequential scans priced out of reach,
must show no sequential scan of a tenant table (if one still shows, no index can serve the shape)."""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration.conftest import created, record
from tests.stack import unique

TENANT_TABLES = ("transactions", "entries", "balances", "accounts", "holds", "replays", "idempotency_keys")
# (account, reference, status, metadata): the filters of GET .../transactions, alone and together.
SHAPES = [(False, False, False, False), (True, False, False, False), (False, True, False, False),
          (False, False, True, False), (False, False, False, True), (True, False, True, False),
          (False, True, True, False)]
PARAMS = "('t', 'alice', 'ref', 'committed', '{\"k\": \"v\"}'::jsonb, -1::bigint, 100::bigint, ''::text, 10)"


async def plan(conn: asyncpg.Connection, statement: str) -> str:
    rows = await conn.fetch(f"EXPLAIN {statement}")
    return "\n".join(r[0] for r in rows)


def scans_a_tenant_table(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Seq Scan" in line and any(t in line for t in TENANT_TABLES)]


@pytest.fixture
async def planning(scratch: tuple[asyncpg.Connection, str], line: object) -> asyncpg.Connection:
    conn, schema = scratch
    tenant = unique()
    await line.submit([created(0, tenant), record(1, tenant, 10), record(2, tenant, 5, reference="ref")])  # type: ignore[attr-defined]
    await line.drain()  # type: ignore[attr-defined]
    await conn.execute(f"SET search_path = {schema}, public")
    await conn.execute("SET enable_seqscan = off")
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    return conn


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_transactions_filter_is_served_by_an_index(planning: asyncpg.Connection,
                                                               shape: tuple[bool, bool, bool, bool]) -> None:
    sql = await planning.fetchval("SELECT ledger_transactions_query($1, $2, $3, $4)", *shape)
    name = f"q_{unique('p').replace('-', '_')}"
    await planning.execute(f"PREPARE {name} (text, text, text, text, jsonb, bigint, bigint, text, integer) AS {sql}")
    text = await plan(planning, f"EXECUTE {name} {PARAMS}")
    assert scans_a_tenant_table(text) == [], text


async def test_time_ranges_accounts_and_prefix_sums_are_served_by_indexes(planning: asyncpg.Connection) -> None:
    statements = [
        "SELECT * FROM ledger_time_range('t', now() - interval '1 day', now())",
        "SELECT x.log_offset FROM transactions x WHERE x.tenant = 't' AND x.created_at >= now()"
        " ORDER BY x.created_at, x.log_offset LIMIT 1",
        "SELECT DISTINCT b.account FROM balances b WHERE b.tenant = 't' AND b.account >= 'al' AND b.account < 'al~'"
        " ORDER BY b.account LIMIT 10",
        "SELECT b.asset, sum(b.balance) FROM balances b WHERE b.tenant = 't' AND b.account >= 'al'"
        " AND b.account < 'al~' GROUP BY b.asset",
    ]
    for statement in statements:
        text = await plan(planning, statement)
        assert scans_a_tenant_table(text) == [], text
