"""Role passwords from the roles' URLs: what docker compose relies on, with SCRAM authentication."""

from __future__ import annotations

import os

import asyncpg

from infra import settings as settings_mod
from infra.migrate import role_passwords, set_passwords
from tests.stack import unique


def test_the_passwords_come_from_the_ledger_roles_urls_only() -> None:
    cfg = settings_mod.load({
        "LEDGER_DATABASE_URL": "postgresql://postgres:owner@db/ledger",
        "LEDGER_API_DATABASE_URL": "postgresql://ledger_api:s%40cret@db/ledger",
        "LEDGER_PROJECTOR_DATABASE_URL": "postgresql://someone_else:x@db/ledger",
    })
    assert role_passwords(cfg) == {"ledger_api": "s@cret"}
    assert role_passwords(settings_mod.load({})) == {}  # the local default: no password set, trust as before


async def test_a_role_gets_a_scram_verifier_never_the_password_itself() -> None:
    owner = os.environ["LEDGER_DATABASE_URL"]
    conn = await asyncpg.connect(owner)
    role = unique("pw_probe").replace("-", "_")
    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        await set_passwords(owner, {role: "it's a secret; DROP ROLE x"})
        stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    finally:
        await conn.execute(f'DROP ROLE "{role}"')
        await conn.close()
    assert stored.startswith("SCRAM-SHA-256$")
    assert "secret" not in stored
