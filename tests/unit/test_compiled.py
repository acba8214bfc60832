"""The compiled core is used only when it was built from exactly the sources in `ledger/`."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import ledger
import ledger.fold
from infra import compiled
from infra.compiled import compiled_digest
from tools.compiled import current


def test_any_change_to_a_module_changes_the_digest_a_build_is_checked_against(tmp_path: Path) -> None:
    package = tmp_path / "ledger"
    shutil.copytree(Path(ledger.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = compiled_digest(package)
    assert before == compiled_digest(Path(ledger.__file__).parent)
    errors = package / "errors.py"  # a module left pure counts too: the compiled ones use its types
    errors.write_text(errors.read_text() + "\n")
    assert compiled_digest(package) != before


def test_a_current_build_is_what_runs_unless_pure_is_asked() -> None:
    built = current()
    pure = os.environ.get("LEDGER_PURE", "") not in ("", "0")
    assert (built and not pure) == compiled.active()
    assert ledger.fold.__file__ is not None
    assert ledger.fold.__file__.endswith(".so") == compiled.active()
    assert Path(ledger.errors.__file__ or "").parent == Path(ledger.__file__).parent  # never a copy


def test_importing_the_core_reads_nothing_and_chooses_nothing() -> None:
    """`ledger/__init__.py` is its docstring: the choice of a build is the services' (`compiled.use`)."""
    body = ast.parse(Path(ledger.__file__).read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), body
