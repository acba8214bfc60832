"""Starting the ledger's own processes (projector, API) and stopping them in order."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra import settings as settings_mod
from infra.migrate import migrate_and_secure
from infra.settings import Settings
from infra.topics import ensure_topics
from tools.local import ROOT, kept_secret, say

STOP_TIMEOUT_S = 10.0


def spawn(module: str, env: dict[str, str], log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m module` in its own session, so a terminal's Ctrl-C reaches only the supervisor."""
    if log_file is None:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, start_new_session=True)
    with open(log_file, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], name: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop within {timeout_s:.0f} s; killing it")
        proc.kill()
        proc.wait()


def prepare(env: dict[str, str]) -> None:
    """Topics and migrations for the settings in `env`."""
    cfg = settings_mod.load(env)
    started = time.monotonic()
    topics = (cfg.transactions_topic, cfg.outcomes_topic)
    asyncio.run(ensure_topics(cfg.kafka_bootstrap, topics, cfg.topic_partitions, cfg.topic_replication))
    applied = asyncio.run(migrate_and_secure(cfg))
    say(f"topics ready, database: {applied} ({time.monotonic() - started:.1f} s)")


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def position_key(cfg: Settings) -> str:
    """`LEDGER_POSITION_KEY` for the processes a local run starts (`make run`, `make test`, `make bench`): the
    one set, or one made once and kept in `.data/position_key`, so that every process of the run (API workers,
    projectors, tests, clients) seals and opens the same tokens, and tokens handed out outlive a restart."""
    if cfg.position_key is not None:
        return base64.urlsafe_b64encode(cfg.position_key).decode("ascii").rstrip("=")
    return kept_secret("position_key")
