"""`make run`: the whole stack in the foreground until Ctrl-C (SIGINT) or SIGTERM.

Starts (or reuses) Kafka and PostgreSQL, creates the topics, migrates, runs the projector, the dispatcher
(webhooks) and the API, and on a signal stops what it started in reverse order: API, dispatcher, projector,
Kafka, PostgreSQL.

A child that exits is restarted, up to `RESTARTS_MAX` times in `RESTART_WINDOW_S`; past that it is left
stopped, alone (the API keeps serving reads while the projector waits, and `/readyz` says why), until an
operator fixes the cause and sends SIGHUP to this process, which restarts whatever was left stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from infra import settings as settings_mod
from tools import local, processes
from tools.local import DATA, say

READY_TIMEOUT_S = 60
RESTARTS_MAX = 5
RESTART_WINDOW_S = 300.0


def admin_token(configured: str) -> str:
    """`LEDGER_ADMIN_TOKEN`, or one generated once and kept under `.data/` so restarts keep it."""
    return configured or local.kept_secret("admin_token")


class RestartBudget:
    """The restarts one child may have: `limit` within a sliding `window_s`."""

    def __init__(self, limit: int = RESTARTS_MAX, window_s: float = RESTART_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self.times: list[float] = []

    def allow(self, now: float) -> bool:
        """Count a restart at `now` and say yes, or say no once the window holds `limit` already."""
        self.times = [t for t in self.times if now - t < self.window_s]
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True

    def reset(self) -> None:
        self.times.clear()


def given_up_banner(name: str, status: int | None, log_file: str) -> str:
    return (f"\n{'!' * 100}\n"
            f"the {name} exited (status {status}) after {RESTARTS_MAX} restarts in {RESTART_WINDOW_S:.0f} s; "
            f"it is NOT restarted again.\n"
            f"The rest of the stack keeps running (the API serves reads; /readyz is not ready).\n"
            f"See {log_file}, fix the cause, then restart it with:  kill -HUP {os.getpid()}\n"
            f"(or stop everything with Ctrl-C and start again with make run)\n{'!' * 100}")


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
    revive = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    def on_hangup(signum: int, frame: object) -> None:
        nonlocal revive
        revive = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    base = settings_mod.load()
    started_pg, started_kafka = local.up()
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        env = processes.child_env(LEDGER_ADMIN_TOKEN=admin_token(base.admin_token),
                                  LEDGER_POSITION_KEY=processes.position_key(base),
                                  LEDGER_PROJECTOR_METRICS_PORT=str(base.projector_metrics_port or 9464))
        cfg = settings_mod.load(env)
        processes.prepare(env)
        logs = DATA / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # One consumer group: the projectors share the partitions; each serves its metrics on its own port.
        metrics_port = int(env["LEDGER_PROJECTOR_METRICS_PORT"])
        projectors = ["projector"] if cfg.projectors == 1 else [f"projector {n}" for n in range(1, cfg.projectors + 1)]
        modules = {**{name: "projections.app" for name in projectors}, "dispatcher": "dispatch", "API": "api"}
        log_files = {name: logs / f"{name.replace(' ', '-')}.log" for name in projectors} | {
            "dispatcher": logs / "dispatcher.log", "API": logs / "api.log"}
        dispatcher_port = str(cfg.dispatcher_metrics_port or 9474)
        envs = {name: {**env, "LEDGER_PROJECTOR_METRICS_PORT": str(metrics_port + n)}
                for n, name in enumerate(projectors)} | {
            "dispatcher": {**env, "LEDGER_DISPATCHER_METRICS_PORT": dispatcher_port}, "API": env}
        for name in modules:
            children[name] = processes.spawn(modules[name], envs[name], log_files[name])
        budgets = {name: RestartBudget() for name in modules}
        given_up: set[str] = set()
        url = f"http://{cfg.api_host}:{cfg.api_port}"
        wait_ready(url, children["API"])
        say(f"API ready at {url}")
        say(f"admin token: {cfg.admin_token}")
        say("projector metrics: " + ", ".join(f"http://127.0.0.1:{envs[name]['LEDGER_PROJECTOR_METRICS_PORT']}/metrics"
                                              for name in projectors))
        say(f"dispatcher metrics: http://127.0.0.1:{dispatcher_port}/metrics")
        say(f"logs: {logs}/ ; press Ctrl-C to stop")
        while not stopping:
            if revive:
                revive = False
                for name in sorted(given_up):
                    say(f"SIGHUP: restarting the {name}")
                    budgets[name].reset()
                    children[name] = processes.spawn(modules[name], envs[name], log_files[name])
                given_up.clear()
            for name, proc in children.items():
                if proc.poll() is None or stopping or name in given_up:
                    continue
                if not budgets[name].allow(time.monotonic()):
                    given_up.add(name)
                    say(given_up_banner(name, proc.returncode, str(log_files[name])))
                    continue
                say(f"the {name} exited with status {proc.returncode}; restarting it (see {log_files[name]})")
                children[name] = processes.spawn(modules[name], envs[name], log_files[name])
            time.sleep(0.2)
    finally:
        say("stopping")
        for name in sorted(children, key=lambda name: name != "API"):  # the API first
            processes.stop(children[name], name)
        local.stop_started(started_pg, started_kafka)
    sys.exit(0)


if __name__ == "__main__":
    main()
