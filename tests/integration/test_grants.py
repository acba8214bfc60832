"""Function privileges, checked in the database itself: each role may execute only what it calls (the rest of
the suite shows that it can still do its job)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra.settings import API_ROLE, PROJECTOR_ROLE, with_user
from tests.stack import unique

# Called with arguments that would do harm if the call were allowed, inside a transaction rolled back anyway.
OPERATOR_CALLS = [
    "SELECT ledger_activate_projection('proj_v1')",
    "SELECT ledger_create_projection('{schema}')",
    "SELECT ledger_use_live()",
]
PROJECTOR_CALLS = [
    "SELECT * FROM projector_open_batch('ledger.transactions', ARRAY[0], '{schema}')",
    "SELECT projector_begin()",
    "SELECT ledger_switch_lock()",
]
API_CALLS = ["SELECT * FROM api_balances('t', 'a')", "SELECT ledger_tenant()"]


@pytest.fixture(params=[API_ROLE, PROJECTOR_ROLE])
async def role_conn(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    conn = await asyncpg.connect(with_user(os.environ["LEDGER_DATABASE_URL"], request.param))
    yield request.param, conn
    await conn.close()


async def refused(conn: asyncpg.Connection, statement: str) -> bool:
    """True if the role may not execute the function at all. Failing inside it (even for lack of a privilege
    on what it touches: ledger_activate_projection's ALTER FUNCTION) means it was executable."""
    try:
        async with conn.transaction():
            await conn.execute(statement.format(schema=unique("proj_x").replace("-", "_")))
    except asyncpg.InsufficientPrivilegeError as e:
        return e.message.startswith("permission denied for function")
    except asyncpg.PostgresError:
        return False
    return False


async def test_each_role_executes_no_function_but_its_own(role_conn: tuple[str, asyncpg.Connection]) -> None:
    role, conn = role_conn
    expected_refused = OPERATOR_CALLS + (PROJECTOR_CALLS if role == API_ROLE else API_CALLS)
    for statement in expected_refused:
        assert await refused(conn, statement), f"{role} may run {statement}"


async def test_public_executes_no_function_of_the_ledger() -> None:
    conn = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    try:
        granted = await conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND has_function_privilege('public', p.oid, 'EXECUTE')")
        # A function created later (a new function file) is covered by the default privileges too (rolled back).
        probing = conn.transaction()
        await probing.start()
        try:
            await conn.execute("CREATE FUNCTION public.grants_probe() RETURNS int LANGUAGE sql AS 'SELECT 1'")
            probe = await conn.fetchval("SELECT has_function_privilege('public', 'public.grants_probe()', 'EXECUTE')")
        finally:
            await probing.rollback()
    finally:
        await conn.close()
    assert [r["proname"] for r in granted] == []
    assert probe is False
