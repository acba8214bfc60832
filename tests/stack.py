"""The real stack under test: a projector and an API started as processes against real Kafka and PostgreSQL.

`make test` (tools.testing) starts the services and points `LEDGER_*` at them before pytest runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx

from infra import settings as settings_mod
from infra.kafka import log_end
from ledger.positions import Position, PositionKey
from tools import processes
from tools.local import DATA
from tools.testing import free_port

# This test run's own topics (tools.testing names them after the run).
SETTINGS = settings_mod.load()
TRANSACTIONS_TOPIC = SETTINGS.transactions_topic
OUTCOMES_TOPIC = SETTINGS.outcomes_topic
READY_TIMEOUT_S = 60
CATCH_UP_TIMEOUT_S = 600


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def position_key() -> PositionKey:
    """The key this session's API and projector seal position tokens with (tools.testing sets it)."""
    key = settings_mod.load().position_key
    assert key is not None, "service tests run under `make test`, which sets LEDGER_POSITION_KEY"
    return PositionKey(key)


def token(tenant: str, position: Position) -> str:
    """The token the API hands `tenant` for `position`."""
    return position_key().token(tenant, position)


def opened(tenant: str, token: str) -> Position:
    """The position of a token the API handed `tenant`."""
    return position_key().parse(tenant, token)


class Stack:
    """The processes of one test session, with the controls fault tests need."""

    def __init__(self) -> None:
        if "LEDGER_DATABASE_URL" not in os.environ:
            raise RuntimeError("service tests run under `make test`, which starts Kafka and PostgreSQL")
        self.admin_token = secrets.token_urlsafe(24)
        self.settings = settings_mod.load()
        self.api_url = f"http://127.0.0.1:{self.settings.api_port}"
        # A small pool: tenant context must never leak between requests that share connections.
        # Webhooks to this machine's receivers: the API lets `localhost` and `127.0.0.1` be registered, and the
        # dispatcher delivers only to `localhost` (so `127.0.0.1` is what the delivery-time check refuses).
        self.env = processes.child_env(LEDGER_ADMIN_TOKEN=self.admin_token,
                                       LEDGER_DB_POOL_SIZE_MAX="4",
                                       LEDGER_WEBHOOK_ALLOW_HOSTS="localhost,127.0.0.1")
        self.dispatcher_env = {**self.env, "LEDGER_WEBHOOK_ALLOW_HOSTS": "localhost",
                               "LEDGER_DISPATCHER_METRICS_PORT": str(free_port())}
        self.logs = DATA / "logs" / f"tests-{os.environ.get('LEDGER_TEST_RUN_ID', 'manual')}"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.projector: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.dispatcher: subprocess.Popen[bytes] | None = None
        self.extras: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.start_projector()
        self.start_dispatcher()
        self.api = processes.spawn("api", self.env, self.logs / "api.log")
        self._wait_ready()
        self._wait_projecting()

    def start_projector(self) -> None:
        self.projector = processes.spawn("projections.app", self.env, self.logs / "projector.log")

    def start_dispatcher(self) -> None:
        self.dispatcher = processes.spawn("dispatch", self.dispatcher_env, self.logs / "dispatcher.log")

    def kill_dispatcher(self, sig: int = signal.SIGKILL) -> None:
        assert self.dispatcher is not None
        self.dispatcher.send_signal(sig)
        self.dispatcher.wait(15)

    def ensure_dispatcher(self) -> None:
        assert self.dispatcher is not None
        if self.dispatcher.poll() is not None:
            self.start_dispatcher()

    def extra_projector(self) -> subprocess.Popen[bytes]:
        """A second projector in the same consumer group, stopped with the stack."""
        proc = processes.spawn("projections.app", self.env, self.logs / "projector-2.log")
        self.extras.append(proc)
        return proc

    @contextlib.contextmanager
    def extra_api(self, **overrides: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
        """Another API process on this session's database and topics, with some settings changed; yields its
        URL and process once it serves `/healthz` (it may well not be ready: that is often what is tested)."""
        port = free_port()
        env = {**self.env, "LEDGER_API_PORT": str(port), **overrides}
        proc = processes.spawn("api", env, self.logs / f"api-{port}.log")
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                assert proc.poll() is None, f"the extra API exited; see {self.logs}/api-{port}.log"
                assert time.monotonic() < deadline, "the extra API did not serve /healthz in time"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            yield url, proc
        finally:
            processes.stop(proc, "extra API")

    def ensure_projector(self) -> None:
        """Restart the projector if a fault test left it dead (as a supervisor would)."""
        assert self.projector is not None
        if self.projector.poll() is not None:
            self.start_projector()

    def kill_projector(self, sig: int = signal.SIGKILL) -> None:
        assert self.projector is not None
        self.projector.send_signal(sig)
        self.projector.wait(15)

    def stop(self) -> None:
        for proc, name in ((self.api, "API"), (self.dispatcher, "dispatcher"), (self.projector, "projector"),
                           *((p, "extra") for p in self.extras)):
            if proc is not None:
                processes.stop(proc, name)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.api is not None and self.api.poll() is None, f"the API exited; see {self.logs}/api.log"
            try:
                if httpx.get(f"{self.api_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API was not ready in time")

    def _wait_projecting(self) -> None:
        """Until a probe transaction commits: the projector has joined its group and caught up."""
        admin = {"Authorization": f"Bearer {self.admin_token}"}
        probe = unique("probe")
        assert httpx.post(f"{self.api_url}/v1/tenants", json={"id": probe}, headers=admin).status_code == 201
        key = httpx.post(f"{self.api_url}/v1/tenants/{probe}/keys", json={"scopes": ["read", "write"]}, headers=admin)
        headers = {"Authorization": f"Bearer {key.json()['key']}"}
        body = {"postings": [{"source": "@world", "destination": "probe", "amount": 1, "asset": "PROBE"}]}
        sent = httpx.post(f"{self.api_url}/v1/tenants/{probe}/transactions", json=body, headers=headers)
        assert sent.status_code == 202, sent.text
        # The probe waits behind whatever history a reused broker holds for its partition.
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.api_url}/v1/tenants/{probe}/accounts/probe", headers=headers,
                                 params={"min_position": sent.json()["position"], "timeout_ms": 5000}, timeout=10)
            if response.status_code == 200:
                asyncio.run(self.caught_up())
                return
        raise RuntimeError(f"the projector did not apply a probe in time; see {self.logs}/projector.log")

    async def caught_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S, restart: bool = False) -> None:
        """Until the projection has applied the whole log (a reused broker may hold a long history); with
        `restart`, a projector that stopped itself is started again, as a supervisor would."""
        end = await log_end(self.settings.kafka_bootstrap, self.settings.transactions_topic)
        conn = await asyncpg.connect(self.env["LEDGER_DATABASE_URL"])
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if restart:
                    self.ensure_projector()
                rows = await conn.fetch("SELECT * FROM api_offsets()")
                applied = {r["log_partition"]: r["next_offset"] for r in rows}
                if all(applied.get(p, 0) >= offset for p, offset in end.items()):
                    return
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        raise RuntimeError(f"the projection did not reach the end of the log {end} in time")
