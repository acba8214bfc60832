"""The database's schema: versioned migrations, then the SQL functions, then the first projection.

* Versioned migrations, `infra/migrations/NNN_name.sql`: roles, tables, types, grants, row-level security, and
  every change to the projection schemas that exist. Each is applied once, in order, in a transaction with its
  row of `schema_migrations` (version, name, sha256), and never changed once applied (`MigrationChanged`).
  `100_baseline.sql` stands for 001..021, squashed: a database that has them all is recorded as at the baseline.
* Repeatable functions, `infra/functions/<name>.sql`: one function each, its current definition and its grants,
  applied after the versioned migrations whenever the file's sha256 differs from the one recorded in
  `schema_functions`, each in a transaction with its record. infra/functions/README.md says how a developer
  changes, adds or removes a function, and changes the projection (`ledger_create_projection`).
* On a fresh database (no live projection in `ledger_meta`), the first projection, `proj_v1`, created with
  `ledger_create_projection` and made live with `ledger_activate_projection`.

Run as the database owner (`LEDGER_DATABASE_URL`); creates the database itself when it is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from infra import settings as settings_mod
from infra.settings import API_ROLE, PROJECTOR_ROLE, Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
FUNCTIONS_DIR = Path(__file__).parent / "functions"
_NAME = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")
_FUNCTION_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_LOCK_ID = 0x1ED6E2  # advisory lock: one migrator at a time
BASELINE = 100
SQUASHED = frozenset(range(1, 22))  # 001..021, which 100_baseline replaces
FIRST_PROJECTION = "proj_v1"

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


def functions() -> list[tuple[str, Path]]:
    """Every function file, by the name of the function it defines, in name order."""
    found = []
    for path in sorted(FUNCTIONS_DIR.glob("*.sql")):
        assert _FUNCTION_NAME.fullmatch(path.stem), f"function file name must be <function name>.sql: {path.name}"
        found.append((path.stem, path))
    return found


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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


class MigrationsSquashed(RuntimeError):
    """The database has some of the migrations the baseline replaced, not all: no file here can bring it on."""


async def _check_unchanged(conn: asyncpg.Connection, version: int, path: Path, digest: str,
                           recorded: str | None) -> None:
    if recorded is None:  # applied before checksums were kept: record the file as it is now
        await conn.execute("UPDATE public.schema_migrations SET sha256 = $2 WHERE version = $1", version, digest)
    elif recorded != digest:
        raise MigrationChanged(f"{path.name} was applied with sha256 {recorded[:12]}, the file now has "
                               f"{digest[:12]}: write a new migration instead of changing an applied one")


async def _adopt_baseline(conn: asyncpg.Connection, done: dict[int, str | None]) -> bool:
    """A database migrated by 001..021 has what 100_baseline creates: record the baseline as applied, without
    running it. Rows of migrations whose files are gone stay as they are. Returns whether it was recorded."""
    had = SQUASHED & done.keys()
    if BASELINE in done or not had:
        return False
    if had != SQUASHED:
        missing = ", ".join(f"{v:03d}" for v in sorted(SQUASHED - had))
        raise MigrationsSquashed(
            f"this database has {len(had)} of the migrations 001..021 (not {missing}), which {BASELINE}_baseline "
            "replaced: upgrade it first with the release before the baseline, which applies them, then migrate "
            "again with this one")
    path = next(p for v, _, p in migrations() if v == BASELINE)
    digest = _sha256(path.read_text())
    await conn.execute("INSERT INTO public.schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                       BASELINE, "baseline", digest)
    done[BASELINE] = digest
    log.info("migrations 001..021 applied before: %s recorded as applied, not run", path.name)
    return True


# The `api_*` functions' files name `proj_v1`, the first projection; once a replay has switched the live
# projection to another schema, they must read that one. Every function file is applied with this, in its
# transaction, and every migration run that applied anything ends with it: it points them all at the live
# projection, as a switch does (`ledger_activate_projection`).
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


@dataclass
class Applied:
    """What one run of the migrator did."""

    migrations: list[int] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    projection: str | None = None  # the first projection, created on a fresh database
    baseline_recorded: bool = False  # 001..021 found applied: the baseline recorded, not run

    def __bool__(self) -> bool:
        return bool(self.migrations or self.functions or self.projection or self.baseline_recorded)

    def __str__(self) -> str:
        done = []
        if self.baseline_recorded:
            done.append(f"{BASELINE:03d}_baseline recorded (001..021 applied before)")
        if self.migrations:
            done.append("migrations " + ", ".join(f"{v:03d}" for v in self.migrations))
        if self.functions:
            done.append(f"functions {', '.join(self.functions)}")
        if self.projection:
            done.append(f"projection {self.projection} created and live")
        return "; ".join(done) or "nothing (up to date)"


async def _apply_migrations(conn: asyncpg.Connection, applied: Applied) -> int:
    """Apply the migrations not recorded yet; returns the newest version the database has recorded."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute("ALTER TABLE public.schema_migrations ADD COLUMN IF NOT EXISTS sha256 text")
    rows = await conn.fetch("SELECT version, sha256 FROM public.schema_migrations")
    done: dict[int, str | None] = {r["version"]: r["sha256"] for r in rows}
    applied.baseline_recorded = await _adopt_baseline(conn, done)
    for version, name, path in migrations():
        text = path.read_text()
        digest = _sha256(text)
        if version in done:
            await _check_unchanged(conn, version, path, digest, done[version])
            continue
        async with conn.transaction():
            await conn.execute(text)
            await conn.execute("INSERT INTO public.schema_migrations (version, name, sha256)"
                               " VALUES ($1, $2, $3)", version, name, digest)
        log.info("applied migration %03d_%s", version, name)
        applied.migrations.append(version)
    return max([*done, *applied.migrations], default=0)


async def _apply_functions(conn: asyncpg.Connection, applied: Applied) -> None:
    """Each function file whose sha256 is not the one recorded, in name order, each in its own transaction with
    its record. The record of a file that is gone is forgotten (the function stays until a migration drops it),
    so that a file of that name, brought back, is applied."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS public.schema_functions ("
        " name text PRIMARY KEY, sha256 text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = await conn.fetch("SELECT name, sha256 FROM public.schema_functions")
    recorded = {r["name"]: r["sha256"] for r in rows}
    found = functions()
    for name, path in found:
        text = path.read_text()
        digest = _sha256(text)
        if recorded.get(name) == digest:
            continue
        async with conn.transaction():
            await conn.execute(text)
            await conn.execute(REPOINT)
            await conn.execute("INSERT INTO public.schema_functions (name, sha256) VALUES ($1, $2)"
                               " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, applied_at = now()",
                               name, digest)
        log.info("applied function %s", name)
        applied.functions.append(name)
    await conn.execute("DELETE FROM public.schema_functions WHERE name <> ALL($1::text[])", [n for n, _ in found])


async def _first_projection(conn: asyncpg.Connection, applied: Applied) -> None:
    """No projection is live (a fresh database): create the first and make it live, in one transaction."""
    async with conn.transaction():
        if await conn.fetchval("SELECT EXISTS (SELECT FROM public.ledger_meta)"):
            return
        await conn.execute("SELECT ledger_create_projection($1)", FIRST_PROJECTION)
        await conn.execute("SELECT ledger_activate_projection($1)", FIRST_PROJECTION)
    log.info("created projection %s, live", FIRST_PROJECTION)
    applied.projection = FIRST_PROJECTION


async def migrate(url: str) -> Applied:
    """Apply every migration not yet recorded, then every function file changed since it was applied (unless a
    newer release has migrated the database), then create the first projection if none is live, all in one
    transaction; returns what was done."""
    await ensure_database(url)
    # Migrations resolve unqualified names in public, whatever a database or role default says.
    conn = await asyncpg.connect(url, server_settings={"search_path": "public"})
    applied = Applied()
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        # One transaction for the whole run (each step a savepoint in it): a run that fails leaves the database
        # as it found it. Upgrading from 001..021, migration 101 drops the projection steps that the old
        # `ledger_create_projection` calls and only its function file replaces it: never one without the other.
        async with conn.transaction():
            newest = await _apply_migrations(conn, applied)
            shipped = max((v for v, _, _ in migrations()), default=0)
            if newest > shipped:
                # A newer release migrated this database: its function files are the ones that belong here, and
                # applying this release's would roll them back (an old pod's migrate during a rolling deploy).
                log.warning("the database has migration %03d, newer than this release's %03d: its SQL functions "
                            "are left as the newer release made them", newest, shipped)
            else:
                await _apply_functions(conn, applied)
            await _first_projection(conn, applied)
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


async def migrate_and_secure(cfg: Settings) -> Applied:
    """Migrate, then give the ledger roles the passwords their URLs carry. With password authentication
    (docker compose) that is how the roles get them; the local default URLs carry none and the local
    cluster trusts 127.0.0.1, so nothing changes there."""
    applied = await migrate(cfg.database_url)
    await set_passwords(cfg.database_url, role_passwords(cfg))
    return applied


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    applied = asyncio.run(migrate_and_secure(settings_mod.load()))
    print(f"applied: {applied}")


if __name__ == "__main__":
    main()
