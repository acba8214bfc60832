"""Row-level security, checked in the database itself: the API's role sees one tenant at a time, or none."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra.settings import API_ROLE, with_user
from tests.conftest import live_projection
from tests.stack import unique

TENANT_TABLES = ["transactions", "balances", "entries", "idempotency_keys"]


@pytest.fixture
async def two_tenants(db: asyncpg.Pool) -> AsyncIterator[tuple[str, str]]:
    """Rows for tenants A and B in every tenant table, written as the owner, removed afterwards (they are
    not in the log, so `ledger verify` would rightly flag them)."""
    a, b = unique("rls"), unique("rls")
    for t in (a, b):
        await db.execute(
            "INSERT INTO transactions (tenant, id, status, postings, metadata, fingerprint, log_partition, log_offset,"
            " created_at, committed_at) VALUES ($1, 'tx', 'committed', '[]', '{}', '', 0, 0, now(), now())", t)
        await db.execute("INSERT INTO balances VALUES ($1, 'alice', 'USD/2', 5, 0, 0)", t)
        await db.execute("INSERT INTO entries VALUES ($1, 'alice', 'USD/2', 0, 0, 'tx', 5, 5, now(), 5, 1)", t)
        await db.execute("INSERT INTO idempotency_keys VALUES ($1, 'k', 'tx')", t)
    yield a, b
    for table in TENANT_TABLES:
        await db.execute(f"DELETE FROM {table} WHERE tenant = ANY($1)", [a, b])


@pytest.fixture
async def api_conn() -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(with_user(os.environ["LEDGER_DATABASE_URL"], API_ROLE))
    await live_projection(conn)
    yield conn
    await conn.close()


async def test_api_role_is_not_the_owner_and_cannot_bypass(api_conn: asyncpg.Connection) -> None:
    row = await api_conn.fetchrow("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert (row["rolsuper"], row["rolbypassrls"]) == (False, False)
    forced = await api_conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relrowsecurity AND c.relforcerowsecurity AND c.relname = ANY($1) "
        "AND n.nspname = (SELECT active_schema FROM ledger_meta)", TENANT_TABLES)
    assert sorted(r["relname"] for r in forced) == sorted(TENANT_TABLES)


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_no_tenant_set_sees_no_rows(api_conn: asyncpg.Connection, two_tenants: tuple[str, str],
                                          table: str) -> None:
    a, b = two_tenants
    assert await api_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = ANY($1)", [a, b]) == 0


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_a_never_sees_tenant_b(api_conn: asyncpg.Connection, two_tenants: tuple[str, str],
                                            table: str) -> None:
    a, b = two_tenants
    async with api_conn.transaction():
        await api_conn.execute("SELECT set_config('ledger.tenant', $1, true)", a)
        assert await api_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = $1", a) == 1
        assert await api_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = $1", b) == 0
        assert await api_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant = $1 OR true", b) >= 1
        assert await api_conn.fetchval(f"SELECT count(*) FROM {table} WHERE tenant <> $1 AND tenant = $2", a, b) == 0


async def test_tenant_context_does_not_survive_the_transaction(api_conn: asyncpg.Connection,
                                                                two_tenants: tuple[str, str]) -> None:
    a, _ = two_tenants
    rows = await api_conn.fetch("SELECT * FROM api_balances($1, 'alice')", a)
    assert [r["balance"] for r in rows] == [5]
    assert await api_conn.fetchval("SELECT current_setting('ledger.tenant', true)") in (None, "")
    assert await api_conn.fetchval("SELECT count(*) FROM balances WHERE tenant = $1", a) == 0


async def test_crafted_tenant_strings_match_nothing(api_conn: asyncpg.Connection, two_tenants: tuple[str, str]) -> None:
    a, b = two_tenants
    for crafted in (f"{a}' OR '1'='1", f"{a}%", "", f"{a},{b}", "*"):
        assert await api_conn.fetch("SELECT * FROM api_balances($1, 'alice')", crafted) == []


async def test_api_role_cannot_write_ledger_tables(api_conn: asyncpg.Connection, two_tenants: tuple[str, str]) -> None:
    for statement in ("UPDATE balances SET balance = 0", "DELETE FROM entries",
                      "INSERT INTO balances VALUES ('x', 'y', 'USD', 1, 0, 0)", "TRUNCATE transactions"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await api_conn.execute(statement)
