"""The shape of the codebase: ledger/ stays pure (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

LEDGER = Path(__file__).resolve().parents[2] / "ledger"
FORBIDDEN = {"asyncpg", "aiokafka", "faust", "starlette", "uvicorn", "api", "projections", "infra", "prometheus_client"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_ledger_imports_nothing_but_the_standard_library_and_orjson() -> None:
    files = sorted(LEDGER.glob("*.py"))
    assert files, "ledger/ has no modules"
    offenders = {f.name: imported_roots(f) & FORBIDDEN for f in files if imported_roots(f) & FORBIDDEN}
    assert offenders == {}


def test_ledger_never_uses_floats_or_decimals_for_money() -> None:
    for path in LEDGER.glob("*.py"):
        text = path.read_text()
        assert "float(" not in text and "Decimal" not in text, path.name


def test_no_service_imports_the_developer_tooling() -> None:
    root = LEDGER.parent
    files = [path for folder in ("ledger", "api", "projections", "dispatch", "infra", "client", "ops")
             for path in sorted((root / folder).rglob("*.py")) if "build" not in path.parts]
    offenders = sorted(str(f.relative_to(root)) for f in files if "tools" in imported_roots(f))
    assert offenders == []


def test_ledger_never_reads_the_environment_or_files() -> None:
    """STYLE.md: `ledger/` holds no I/O and never reads the environment (`infra/settings.py` does)."""
    for path in LEDGER.glob("*.py"):
        text = path.read_text()
        for sign in ("os.environ", "getenv", "open(", "read_text", "read_bytes", "import os", "import pathlib"):
            assert sign not in text, (path.name, sign)
