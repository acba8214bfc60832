"""The migrator (infra/migrate.py), on a database of its own: a second run applies nothing, a changed function file
is applied alone and reads the live projection, and a database migrated before the baseline is recorded as at it
(all of 001..021) or refused (some of them)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from infra import migrate
from infra.migrate import Applied, MigrationsSquashed


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
