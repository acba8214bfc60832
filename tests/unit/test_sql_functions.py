"""Every SQL function is defined in one place (infra/functions/README.md): one file of infra/functions/ each, named
after it, and none in a versioned migration but `ledger_tenant()` in the baseline, which the row-level security
policies need before the function files are applied."""

from __future__ import annotations

import re
from pathlib import Path

from infra import migrate

CREATE = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?:public\.)?\"?([a-z_][a-z0-9_]*)\"?\s*\(",
                    re.IGNORECASE)
REVOKE = re.compile(r"\bREVOKE\s+ALL\s+ON\s+FUNCTION\s+([a-z_][a-z0-9_]*)\s*\(", re.IGNORECASE)
# The functions a versioned migration may define (each once, like every function).
IN_MIGRATIONS = {"ledger_tenant"}


def code(path: Path) -> str:
    """The file's SQL without its comments, so that prose naming a statement is not taken for one."""
    return re.sub(r"--[^\n]*", "", path.read_text())


def defined(path: Path) -> list[str]:
    return [name.lower() for name in CREATE.findall(code(path))]


def test_the_function_files_are_found() -> None:
    names = [name for name, _ in migrate.functions()]
    assert "ledger_create_projection" in names and "api_balances" in names, names


def test_no_function_is_defined_twice_in_the_tree() -> None:
    paths = sorted(migrate.MIGRATIONS_DIR.glob("*.sql")) + sorted(migrate.FUNCTIONS_DIR.glob("*.sql"))
    where: dict[str, list[str]] = {}
    for path in paths:
        for name in defined(path):
            where.setdefault(name, []).append(f"{path.parent.name}/{path.name}")
    twice = {name: files for name, files in where.items() if len(files) > 1}
    assert twice == {}


def test_each_function_file_defines_exactly_the_function_it_is_named_after() -> None:
    wrong = {path.name: defined(path) for _, path in migrate.functions() if defined(path) != [path.stem]}
    assert wrong == {}


def test_each_function_file_takes_execute_from_public() -> None:
    """Explicitly, whatever the default privileges: a function is executed only by the roles granted it."""
    missing = [path.name for _, path in migrate.functions() if REVOKE.findall(code(path)) != [path.stem]]
    assert missing == []


def test_versioned_migrations_define_only_the_functions_they_must() -> None:
    found = {name for path in migrate.MIGRATIONS_DIR.glob("*.sql") for name in defined(path)}
    assert found - IN_MIGRATIONS == set()
