"""`make run`: the whole stack in the foreground until Ctrl-C (SIGINT) or SIGTERM.

Starts (or reuses) Kafka and PostgreSQL, creates the topics, migrates, runs the projector and the API,
and on a signal stops what it started in reverse order: API, projector, Kafka, PostgreSQL.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
import urllib.request

from infra import local, processes
from infra import settings as settings_mod
from infra.local import DATA, say

READY_TIMEOUT_S = 60
RESTARTS_MAX = 5
RESTART_WINDOW_S = 300.0


def admin_token(configured: str) -> str:
    """`LEDGER_ADMIN_TOKEN`, or one generated once and kept under `.data/` so restarts keep it."""
    if configured:
        return configured
    path = DATA / "admin_token"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with status {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the API was not ready within {READY_TIMEOUT_S} s")


def main() -> None:
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    base = settings_mod.load()
    started_pg, started_kafka = local.up()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    status = 0
    try:
        env = processes.child_env(LEDGER_ADMIN_TOKEN=admin_token(base.admin_token),
                                  LEDGER_PROJECTOR_METRICS_PORT=str(base.projector_metrics_port or 9464))
        cfg = settings_mod.load(env)
        processes.prepare(env)
        logs = DATA / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        modules = {"projector": "projections.app", "API": "api"}
        children.append(("projector", processes.spawn("projections.app", env, logs / "projector.log")))
        api = processes.spawn("api", env, logs / "api.log")
        children.append(("API", api))
        restarts: list[float] = []
        url = f"http://{cfg.api_host}:{cfg.api_port}"
        wait_ready(url, api)
        say(f"API ready at {url}")
        say(f"admin token: {cfg.admin_token}")
        say(f"projector metrics: http://127.0.0.1:{env['LEDGER_PROJECTOR_METRICS_PORT']}/metrics")
        say(f"logs: {logs}/ ; press Ctrl-C to stop")
        while not stopping:
            for i, (name, proc) in enumerate(children):
                if proc.poll() is None or stopping:
                    continue
                restarts = [t for t in restarts if time.monotonic() - t < RESTART_WINDOW_S]
                if len(restarts) >= RESTARTS_MAX:
                    say(f"the {name} exited with status {proc.returncode} and has restarted too often; stopping")
                    stopping, status = True, 1
                    break
                say(f"the {name} exited with status {proc.returncode}; restarting it (see {logs})")
                restarts.append(time.monotonic())
                log_name = "projector.log" if name == "projector" else "api.log"
                children[i] = (name, processes.spawn(modules[name], env, logs / log_name))
            time.sleep(0.2)
    finally:
        say("stopping")
        for name, proc in reversed(children):
            processes.stop(proc, name)
        local.stop_started(started_pg, started_kafka)
    sys.exit(status)


if __name__ == "__main__":
    main()
