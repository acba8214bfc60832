"""The Python SDK (`client/`, distribution `wallet-ledger-client`) against this session's real stack: its own
suite, live tests included, and its README's program from a fresh virtual environment with `pip install ./client`
(so the package needs nothing of the server's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import create_tenant
from tests.stack import Stack

CLIENT = Path(__file__).resolve().parents[2] / "client"


def test_the_sdk_suite_passes_against_the_running_api(stack: Stack) -> None:
    env = {**os.environ, "LEDGER_SDK_LIVE_URL": stack.api_url, "LEDGER_SDK_ADMIN_TOKEN": stack.admin_token}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=CLIENT,
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    summary = re.search(r"(\d+) passed", run.stdout)
    assert summary is not None and "skipped" not in run.stdout.splitlines()[-1], run.stdout[-500:]


async def test_the_readme_program_runs_from_a_fresh_install(stack: Stack, admin: httpx.AsyncClient,
                                                           tmp_path: Path) -> None:
    program = re.search(r"```python\n(.*?)```", (CLIENT / "README.md").read_text(), re.DOTALL)
    assert program is not None, "the SDK's README shows no program"
    assert program.group(1) == (CLIENT / "examples" / "quickstart.py").read_text()
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path))}  # no PYTHONPATH
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(CLIENT)], capture_output=True,
                             text=True, timeout=600, check=False, env=clean)
    assert install.returncode == 0, install.stderr[-3000:]
    found = subprocess.run([str(python), "-c", "import ledger"], cwd=tmp_path, capture_output=True, text=True,
                           check=False, env=clean)
    assert found.returncode != 0, "the fresh environment must not see the server's packages"
    tenant = await create_tenant(admin, stack)
    try:
        run = subprocess.run([str(python), "-c", program.group(1)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120, check=False,
                             env={**clean, "LEDGER_URL": stack.api_url, "LEDGER_API_KEY": tenant.key,
                                  "LEDGER_TENANT": tenant.id})
    finally:
        await tenant.client.aclose()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "overspend refused: insufficient_funds" in run.stdout
    assert "capture" in run.stdout and "statement: opening" in run.stdout
