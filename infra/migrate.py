"""Versioned SQL migrations, applied in order and recorded in `schema_migrations`.

Run as the database owner (`LEDGER_DATABASE_URL`); creates the database itself when it is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from infra import settings as settings_mod
from infra.settings import API_ROLE, PROJECTOR_ROLE, Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")
_LOCK_ID = 0x1ED6E2  # advisory lock: one migrator at a time

log = logging.getLogger("ledger.migrate")


def migrations() -> list[tuple[int, str, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.fullmatch(path.name)
        assert match is not None, f"migration file name must be NNN_name.sql: {path.name}"
        found.append((int(match[1]), match[2], path))
    versions = [v for v, _, _ in found]
    assert versions == sorted(set(versions)), "migration versions must be unique"
    return found


async def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            quoted = '"' + name.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
            log.info("created database %s", name)
    finally:
        await conn.close()


class MigrationChanged(RuntimeError):
    """An applied migration's file differs from what was applied: the database may not be what it says."""


async def _check_unchanged(conn: asyncpg.Connection, version: int, path: Path, digest: str,
                           recorded: str | None) -> None:
    if recorded is None:  # applied before checksums were kept: record the file as it is now
        await conn.execute("UPDATE public.schema_migrations SET sha256 = $2 WHERE version = $1", version, digest)
    elif recorded != digest:
        raise MigrationChanged(f"{path.name} was applied with sha256 {recorded[:12]}, the file now has "
                               f"{digest[:12]}: write a new migration instead of changing an applied one")


# A migration (re)defines `api_*` functions reading `proj_v1`, the first projection; once a replay has switched
# the live projection to another schema, they must read that one. Every migration run ends by pointing them all
# at the live projection, as a switch does (`ledger_activate_projection`).
REPOINT = """
DO $$
DECLARE
    live text := (SELECT active_schema FROM public.ledger_meta);
    fn regprocedure;
BEGIN
    IF live IS NULL THEN
        RETURN;
    END IF;
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.proname LIKE 'api\\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, public', fn, live);
    END LOOP;
END
$$"""


async def migrate(url: str) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    await ensure_database(url)
    # Migrations resolve unqualified names in public, whatever a database or role default says.
    conn = await asyncpg.connect(url, server_settings={"search_path": "public"})
    applied: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("ALTER TABLE public.schema_migrations ADD COLUMN IF NOT EXISTS sha256 text")
        rows = await conn.fetch("SELECT version, sha256 FROM public.schema_migrations")
        done = {r["version"]: r["sha256"] for r in rows}
        for version, name, path in migrations():
            text = path.read_text()
            digest = hashlib.sha256(text.encode()).hexdigest()
            if version in done:
                await _check_unchanged(conn, version, path, digest, done[version])
                continue
            async with conn.transaction():
                await conn.execute(text)
                await conn.execute("INSERT INTO public.schema_migrations (version, name, sha256)"
                                   " VALUES ($1, $2, $3)", version, name, digest)
            log.info("applied migration %03d_%s", version, name)
            applied.append(version)
        if applied:
            await conn.execute(REPOINT)
    finally:
        await conn.close()
    return applied


def role_passwords(cfg: Settings) -> dict[str, str]:
    """The password each ledger role's URL carries (`postgresql://ledger_api:SECRET@...`), if any."""
    found = {}
    for url in (cfg.api_database_url, cfg.projector_database_url):
        parts = urlsplit(url)
        if parts.password and parts.username in (API_ROLE, PROJECTOR_ROLE):
            found[parts.username] = unquote(parts.password)
    return found


async def set_passwords(owner_url: str, passwords: dict[str, str]) -> None:
    """`ALTER ROLE ... PASSWORD` for each role, hashed by the server (SCRAM, PostgreSQL's default since 14).
    The statement is built by format(%I, %L), never by string concatenation, since it takes no parameters."""
    if not passwords:
        return
    conn = await asyncpg.connect(owner_url)
    try:
        for role, password in passwords.items():
            statement = await conn.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                                            role, password)
            await conn.execute(statement)
    finally:
        await conn.close()


async def migrate_and_secure(cfg: Settings) -> list[int]:
    """Migrate, then give the ledger roles the passwords their URLs carry. With password authentication
    (docker compose) that is how the roles get them; the local default URLs carry none and the local
    cluster trusts 127.0.0.1, so nothing changes there."""
    applied = await migrate(cfg.database_url)
    await set_passwords(cfg.database_url, role_passwords(cfg))
    return applied


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    applied = asyncio.run(migrate_and_secure(settings_mod.load()))
    print(f"migrations applied: {applied or 'none (up to date)'}")


if __name__ == "__main__":
    main()
