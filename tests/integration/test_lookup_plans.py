"""A lookup by id costs the same for a tenant of 20,000 rows as for one of 200, under the API's own role and its
row-level security: the functions themselves (`api_chain_link`, `api_hold`, `api_monitor`, and a waited write's
answer, `api_transaction_answer`), their plans taken by auto_explain as they run, not a copy of their SQL.
Before migration 020 each read every row of the tenant (the id resolved by a sub-select, which row-level
security kept out of the index condition)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from tests.integration.test_statement_plans import rows_touched
from tests.stack import unique

LOOKUPS = ("api_chain_link", "api_hold", "api_monitor", "api_transaction_answer")


async def tenant_of(conn: asyncpg.Connection, schema: str, tenant: str, rows: int) -> None:
    """`rows` holds (each with its chain link) and as many monitors, written as the projector would."""
    await conn.execute(f"""
        INSERT INTO {schema}.transactions (tenant, id, kind, status, postings, metadata, fingerprint, log_partition,
                                           log_offset, created_at, committed_at, hash, previous_hash, chain_index)
        SELECT $1, 'tx' || n, 'hold', 'committed', '[]', '{{}}', '\\x00', 0, n, now(), now(), '\\x01', '\\x02', n
        FROM generate_series(1, $2) AS n""", tenant, rows)
    await conn.execute(f"""
        INSERT INTO {schema}.monitors (tenant, id, account, asset, below, active, log_partition, log_offset,
                                       created_at)
        SELECT $1, 'tx' || n, 'alice', 'USD/2', 0, true, 0, n, now() FROM generate_series(1, $2) AS n""",
                       tenant, rows)
    await conn.execute(f"ANALYZE {schema}.transactions")
    await conn.execute(f"ANALYZE {schema}.monitors")


async def touched(conn: asyncpg.Connection, schema: str, tenant: str, id_: str) -> dict[str, int]:
    """Rows each lookup's query touched, run as the API runs it (its role, its functions), in a transaction
    rolled back: the functions read `schema` only inside it."""
    plans: list[dict[str, Any]] = []

    def logged(_: object, message: asyncpg.PostgresLogMessage) -> None:
        text = message.message or ""
        if "RETURN QUERY" not in text and '"Query Text"' in text:
            document = json.loads(text.split("plan:", 1)[1])
            if "transactions" in document["Query Text"] or "monitors" in document["Query Text"]:
                plans.append(document)

    counts = {}
    conn.add_log_listener(logged)
    try:
        for function in LOOKUPS:
            plans.clear()
            transaction = conn.transaction()
            await transaction.start()
            try:
                for read in (*LOOKUPS, "api_transaction"):  # `api_transaction_answer` calls `api_transaction`
                    await conn.execute(f"ALTER FUNCTION {read}(text, text) SET search_path = {schema}, public")
                await conn.execute("LOAD 'auto_explain'")
                for setting in ("log_min_duration = 0", "log_analyze = on", "log_nested_statements = on",
                                "log_format = json"):
                    await conn.execute(f"SET LOCAL auto_explain.{setting}")
                await conn.execute("SET LOCAL client_min_messages = log")
                await conn.execute("SET LOCAL ROLE ledger_api")
                found = await conn.fetch(f"SELECT * FROM {function}($1, $2)", tenant, id_)
                assert len(found) == 1, (function, found)
            finally:
                await transaction.rollback()  # the function reads the live projection again
            assert plans, f"no plan logged for {function}"
            counts[function] = sum(rows_touched([p]) for p in plans)
    finally:
        conn.remove_log_listener(logged)
    return counts


async def test_a_lookup_by_id_touches_as_many_rows_at_20000_as_at_200(
        scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    small, large = unique("small"), unique("large")
    await tenant_of(conn, schema, small, 200)
    await tenant_of(conn, schema, large, 20_000)
    at_small = await touched(conn, schema, small, "tx150")
    at_large = await touched(conn, schema, large, "tx15000")
    assert at_large == at_small, (at_small, at_large)
    assert max(at_large.values()) <= 4, at_large  # an index lookup: a row or two per node
