"""The processes `make cluster` starts, each restarted when it exits, and what `.data/cluster.json` says of them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.retry import Backoff
from tools.local import ROOT, say

STOP_TIMEOUT_S = 30.0
# A process that keeps dying is restarted after a growing pause (1 s, 2 s, ... 30 s), never given up on: the
# cluster's promise is that whatever is killed comes back. One that ran a minute starts over at the shortest.
RESTART = Backoff(first_s=0.5, cap_s=30.0)  # after each exit that followed a short run
HEALTHY_RUN_S = 60.0


def descendants(pid: int) -> list[int]:
    """Every process under `pid`, children first, from /proc (Linux)."""
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return found
    for child in map(int, children):
        found.append(child)
        found.extend(descendants(child))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


@dataclass
class Child:
    """One supervised process: a Kafka node, a pg_autoctl (which runs its PostgreSQL), a projector, an API."""

    name: str  # the simulated machine it belongs to: kafka-1, pg1, monitor, projector-1, api-1
    role: str  # kafka | ha | projector | api
    port: int
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path = ROOT
    user: str | None = None  # run as this user (we are root)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = 0.0
    failures: int = 0  # exits in a row, each after a short run
    restart_at: float | None = None
    restarts: int = 0
    # Processes it started (pg_autoctl's own workers), seen while it ran: a restart ends those left behind.
    seen: set[int] = field(default_factory=set)

    def start(self) -> None:
        with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, user=self.user,
                                         group=self.user, extra_groups=[] if self.user else None)
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def check(self, now: float) -> None:
        """Restart it if it exited (after its backoff)."""
        if self.proc is None or self.proc.poll() is None:
            return
        if self.restart_at is None:
            ran_s = now - self.started_at
            self.failures = 1 if ran_s > HEALTHY_RUN_S else self.failures + 1
            self.backoff_s = RESTART.delay(self.failures)
            self.restart_at = now + self.backoff_s
            say(f"{self.name} ({self.role}, pid {self.proc.pid}) exited with status {self.proc.returncode}; "
                f"restarting it in {self.backoff_s:.1f} s (log: {self.log})")
            return
        if now >= self.restart_at:
            self.end_leftovers()
            self.restarts += 1
            self.start()
            say(f"{self.name} restarted (pid {self.pid})")

    def watch(self) -> None:
        """Note the processes under it now, so that a restart can end those that outlive it."""
        if self.pid is not None:
            self.seen = {pid for pid in descendants(self.pid) if command_line(pid).startswith("pg_autoctl")}

    def end_leftovers(self) -> None:
        for pid in self.seen:
            if command_line(pid).startswith("pg_autoctl"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.seen = set()

    def terminate(self) -> None:
        if self.pid is not None:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_TIMEOUT_S:.0f} s; killing it")
            self.proc.kill()
            self.proc.wait()
        self.end_leftovers()


def stop_all(children: list[Child]) -> None:
    """SIGTERM to each at once, then wait for all of them."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        child.wait(deadline)
