"""The migrator (infra/migrate.py), on databases of their own: a second run applies nothing; a changed function
file is applied alone and reads the live projection; a database the release before the baseline migrated (its
001..021, kept in data/) upgrades to exactly a fresh database's schema, and a failed upgrade leaves it as it was;
one with some of 001..021 is refused; an older release leaves a newer one's functions alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from infra import migrate
from infra.migrate import Applied, MigrationsSquashed
from infra.settings import with_database
from tools import local


async def recorded_functions(conn: asyncpg.Connection) -> dict[str, tuple[str, object]]:
    rows = await conn.fetch("SELECT name, sha256, applied_at FROM public.schema_functions")
    return {r["name"]: (r["sha256"], r["applied_at"]) for r in rows}


async def test_a_second_run_applies_nothing(own_database: str) -> None:
    again = await migrate.migrate(own_database)
    assert again == Applied() and not again
    conn = await asyncpg.connect(own_database)
    try:
        recorded = await recorded_functions(conn)
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM public.schema_migrations")]
    finally:
        await conn.close()
    files = {name: hashlib.sha256(path.read_text().encode()).hexdigest() for name, path in migrate.functions()}
    assert {name: sha for name, (sha, _) in recorded.items()} == files
    assert sorted(versions) == [v for v, _, _ in migrate.migrations()]


async def test_a_changed_function_file_is_applied_alone_and_reads_the_live_projection(
        own_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    functions = tmp_path / "functions"
    shutil.copytree(migrate.FUNCTIONS_DIR, functions)
    changed = functions / "api_offsets.sql"
    text = changed.read_text()
    assert text.count("BEGIN\n") == 1
    changed.write_text(text.replace("BEGIN\n", "BEGIN\n    -- changed by test_migrate\n"))
    monkeypatch.setattr(migrate, "FUNCTIONS_DIR", functions)
    conn = await asyncpg.connect(own_database)
    try:
        # The file names proj_v1; the live projection is another one, as after a replay.
        await conn.execute("SELECT ledger_create_projection('proj_rebuilt')")
        await conn.execute("SELECT ledger_activate_projection('proj_rebuilt')")
        before = await recorded_functions(conn)

        applied = await migrate.migrate(own_database)

        assert applied == Applied(functions=["api_offsets"])
        after = await recorded_functions(conn)
        assert after["api_offsets"][0] == hashlib.sha256(changed.read_text().encode()).hexdigest()
        assert after["api_offsets"][1] != before["api_offsets"][1]
        assert {n: r for n, r in after.items() if n != "api_offsets"} == {
            n: r for n, r in before.items() if n != "api_offsets"}
        source, config = await conn.fetchrow(
            "SELECT prosrc, proconfig FROM pg_proc WHERE oid = 'public.api_offsets()'::regprocedure")
        assert "changed by test_migrate" in source
        assert config == ["search_path=proj_rebuilt, public"]
        assert await migrate.migrate(own_database) == Applied()
    finally:
        await conn.close()


async def test_a_database_with_all_the_squashed_migrations_is_recorded_at_the_baseline(own_database: str) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        # As a database migrated by 001..021 records them (the files are gone; their rows stay).
        await conn.execute("DELETE FROM public.schema_migrations")
        await conn.executemany("INSERT INTO public.schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                               [(v, f"squashed_{v}", "0" * 64) for v in sorted(migrate.SQUASHED)])
        applied = await migrate.migrate(own_database)
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM public.schema_migrations")]
    finally:
        await conn.close()
    # The baseline recorded, not run (it would fail: its tables exist); the later migrations applied (they are
    # idempotent), the functions unchanged, the projection kept.
    assert applied == Applied(migrations=[v for v, _, _ in migrate.migrations() if v > migrate.BASELINE],
                              baseline_recorded=True)
    assert sorted(versions) == sorted(migrate.SQUASHED) + [v for v, _, _ in migrate.migrations()]


async def test_a_database_with_some_of_the_squashed_migrations_is_refused(own_database: str) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute("DELETE FROM public.schema_migrations")
        await conn.executemany("INSERT INTO public.schema_migrations (version, name) VALUES ($1, $2)",
                               [(v, f"squashed_{v}") for v in range(1, 6)])
        with pytest.raises(MigrationsSquashed, match=r"has 5 of the migrations 001\.\.021 "):
            await migrate.migrate(own_database)
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM public.schema_migrations")]
    finally:
        await conn.close()
    assert sorted(versions) == [1, 2, 3, 4, 5]


OLD_MIGRATIONS = Path(__file__).parent / "data" / "migrations_001_021.tar.gz"


async def migrated_by_the_release_before_the_baseline(url: str) -> None:
    """A database as the release before the baseline leaves it: 001..021 applied and recorded by its migrator
    (the files, as they were, in `data/migrations_001_021.tar.gz`)."""
    await migrate.ensure_database(url)
    conn = await asyncpg.connect(url, server_settings={"search_path": "public"})
    try:
        await conn.execute("CREATE TABLE public.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                           " applied_at timestamptz NOT NULL DEFAULT now(), sha256 text)")
        with tarfile.open(OLD_MIGRATIONS) as archive:
            members = sorted(archive.getmembers(), key=lambda m: m.name)
            assert [int(m.name[:3]) for m in members] == sorted(migrate.SQUASHED)
            for member in members:
                extracted = archive.extractfile(member)
                assert extracted is not None
                text = extracted.read().decode()
                async with conn.transaction():
                    await conn.execute(text)
                    await conn.execute("INSERT INTO public.schema_migrations (version, name, sha256)"
                                       " VALUES ($1, $2, $3)", int(member.name[:3]), member.name[4:-4],
                                       hashlib.sha256(text.encode()).hexdigest())
    finally:
        await conn.close()


def schema(url: str) -> str:
    """`pg_dump --schema-only`, without its per-run `\\restrict` lines."""
    dumped = subprocess.run([local.pg_bin("pg_dump"), "--schema-only", "--no-owner", "-d", url], check=True,
                            capture_output=True, text=True).stdout
    return "\n".join(line for line in dumped.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


@pytest.fixture
async def old_database() -> AsyncIterator[str]:
    url = with_database(os.environ["LEDGER_DATABASE_URL"], f"ledger_old_{uuid.uuid4().hex[:8]}")
    try:
        await migrated_by_the_release_before_the_baseline(url)
        yield url
    finally:
        admin = await asyncpg.connect(with_database(url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_a_database_of_the_release_before_the_baseline_upgrades_to_exactly_a_fresh_ones_schema(
        old_database: str, own_database: str) -> None:
    applied = await migrate.migrate(old_database)
    assert applied.baseline_recorded and applied.migrations == [
        v for v, _, _ in migrate.migrations() if v > migrate.BASELINE]
    assert applied.functions == [name for name, _ in migrate.functions()]
    assert schema(old_database) == schema(own_database)
    assert await migrate.migrate(old_database) == Applied()


async def test_an_upgrade_that_fails_leaves_the_database_as_it_was(
        old_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A function file PostgreSQL refuses, applied after migration 101 dropped the projection steps that the old
    # `ledger_create_projection` calls: the whole run is undone, steps included.
    functions = tmp_path / "functions"
    shutil.copytree(migrate.FUNCTIONS_DIR, functions)
    (functions / "ledger_use_live.sql").write_text("CREATE OR REPLACE FUNCTION ledger_use_live( broken")
    monkeypatch.setattr(migrate, "FUNCTIONS_DIR", functions)
    before = schema(old_database)
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await migrate.migrate(old_database)
    assert schema(old_database) == before
    conn = await asyncpg.connect(old_database)
    try:
        versions = {r["version"] for r in await conn.fetch("SELECT version FROM public.schema_migrations")}
        await conn.execute("SELECT ledger_create_projection('proj_after_failure')")  # its steps are all there
    finally:
        await conn.close()
    assert versions == set(migrate.SQUASHED)


async def test_an_older_release_leaves_the_functions_of_a_newer_one(
        own_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        # A newer release migrated this database (a version this one does not ship) and changed a function.
        await conn.execute("INSERT INTO public.schema_migrations (version, name, sha256) VALUES (999, 'newer', '')")
        functions = tmp_path / "functions"
        shutil.copytree(migrate.FUNCTIONS_DIR, functions)
        changed = functions / "api_offsets.sql"
        changed.write_text(changed.read_text().replace("BEGIN\n", "BEGIN\n    -- an older release's\n", 1))
        monkeypatch.setattr(migrate, "FUNCTIONS_DIR", functions)
        before = await recorded_functions(conn)
        with caplog.at_level("WARNING", logger="ledger.migrate"):
            assert await migrate.migrate(own_database) == Applied()
        assert await recorded_functions(conn) == before
        source = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE oid = 'public.api_offsets()'::regprocedure")
    finally:
        await conn.close()
    assert "an older release's" not in source
    assert "newer than this release's" in caplog.text
