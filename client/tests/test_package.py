"""The package's shape: the README's program is examples/quickstart.py, and nothing of the server is imported."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import wallet_ledger

CLIENT_DIR = Path(__file__).resolve().parent.parent
SERVER_PACKAGES = {"ledger", "api", "infra", "projections", "ops", "dispatch", "client", "bench", "tools"}


def test_readme_program_is_the_quickstart() -> None:
    readme = (CLIENT_DIR / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    programs = [b for b in blocks if "def main()" in b]
    assert len(programs) == 1
    assert programs[0] == (CLIENT_DIR / "examples" / "quickstart.py").read_text()
    for name in ("LEDGER_URL", "LEDGER_API_KEY", "LEDGER_TENANT"):
        assert f'os.environ["{name}"]' in programs[0]


def test_the_sdk_imports_nothing_of_the_server() -> None:
    for path in (CLIENT_DIR / "wallet_ledger").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                assert name.split(".")[0] not in SERVER_PACKAGES, f"{path.name} imports {name}"
                if name.split(".")[0] == "confluent_kafka":
                    assert path.name == "kafka.py"


def test_importing_needs_only_httpx() -> None:
    code = ("import sys; sys.modules['confluent_kafka'] = None; import wallet_ledger; "
            f"assert not any(m.split('.')[0] in {SERVER_PACKAGES!r} for m in sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=CLIENT_DIR, check=True)


def test_public_api() -> None:
    for name in wallet_ledger.__all__:
        assert hasattr(wallet_ledger, name), name
    assert (CLIENT_DIR / "wallet_ledger" / "py.typed").exists()
