"""The stack a run of `make bench` measures (`Bench`): its processes, settings, tenants, keys and results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx

from bench import data
from infra import settings as settings_mod
from infra.kafka import log_end
from tools import processes
from tools.local import DATA, ROOT
from tools.run import wait_ready
from tools.testing import session_env

RESULTS = ROOT / "bench" / "results"
PRODUCE_CONCURRENCY_MAX = 2000
LIMITS_IN_FORCE_S = 1.5  # a change of limits reaches every API process (its notification) within this
OUT_OF_REACH = 10_000_000


def set_limits(url: str, admin_token: str, tenant: str, limits: dict[str, int], settle: bool = True) -> None:
    """The operator's `PUT /v1/tenants/{tenant}/limits`; with `settle`, then the wait until every API process
    has it."""
    answer = httpx.put(f"{url}/v1/tenants/{tenant}/limits", headers={"Authorization": f"Bearer {admin_token}"},
                       json=limits)
    assert answer.status_code == 200, answer.text
    if settle:
        time.sleep(LIMITS_IN_FORCE_S)


class Bench:
    """The stack of one run, as `make run` starts it (its own database, topics and group), the tenants'
    keys, and the results the steps collect."""

    def __init__(self, quick: bool, only: set[str] | None = None) -> None:
        self.quick = quick
        self.only = only
        self.duration_s = 5 if quick else 10
        self.results: dict[str, Any] = {"quick": quick, "machine": _machine()}
        # Its own database, topics and group, removed afterwards: a run never reads an earlier one's log.
        self.env = session_env(settings_mod.load(), f"bench-{secrets.token_hex(4)}", local_services=False)
        self.env["LEDGER_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
        self.env["LEDGER_WEBHOOK_ALLOW_HOSTS"] = "localhost"  # the webhooks step's receiver is on this machine
        self.cfg = settings_mod.load(self.env)
        self.db_url = self.cfg.database_url
        self.bootstrap = self.cfg.kafka_bootstrap
        self.topic = self.cfg.transactions_topic
        self.url = f"http://127.0.0.1:{self.cfg.api_port}"
        self.logs = DATA / "logs" / "bench"
        self.projectors: list[Any] = []
        self.api: Any = None
        self.dispatcher: Any = None
        self.keys: dict[str, str] = {}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        processes.prepare(self.env)
        self.spawn_projectors()
        self.dispatcher = processes.spawn("dispatch", self.env, self.logs / "dispatcher.log")
        self.spawn_api()

    def spawn_api(self, **env: str) -> None:
        self.api = processes.spawn("api", self.env | env, self.logs / "api.log")
        wait_ready(self.url, self.api)

    def stop(self) -> None:
        for proc, name in ((self.api, "API"), (self.dispatcher, "dispatcher"),
                           *((p, "projector") for p in self.projectors)):
            if proc is not None:
                processes.stop(proc, name)

    def spawn_projectors(self, count: int | None = None, **env: str) -> None:
        """As many projector processes as `make run` starts (LEDGER_PROJECTORS) or `count`, one group."""
        self.projectors = [processes.spawn("projections.app", self.env | env, self.logs / f"projector-{n}.log")
                           for n in range(1, (count or self.cfg.projectors) + 1)]

    def stop_projectors(self) -> None:
        for proc in self.projectors:
            processes.stop(proc, "projector")

    def restart(self, which: tuple[str, ...], **env: str) -> None:
        """Restart the API and/or the projectors (`which`) with `env` added; without, as configured."""
        if "projector" in which:
            self.stop_projectors()
            self.spawn_projectors(None, **env)
        if "api" in which:
            processes.stop(self.api, "API")
            self.spawn_api(**env)

    @contextlib.contextmanager
    def limit_lifted(self, tenant: str, kind: str) -> Iterator[None]:
        """The tenant's `kind` limit (`writes_per_s`, `reads_per_s`) out of reach meanwhile, then back to the
        default: a cost measured past the limit would be that of cheap 429s."""
        token = self.env["LEDGER_ADMIN_TOKEN"]
        set_limits(self.url, token, tenant, {kind: OUT_OF_REACH})
        try:
            yield
        finally:
            default = self.cfg.tenant_writes_per_s if kind == "writes_per_s" else self.cfg.tenant_reads_per_s
            set_limits(self.url, token, tenant, {kind: default}, settle=False)

    async def tenants(self) -> None:
        admin = {"Authorization": f"Bearer {self.env['LEDGER_ADMIN_TOKEN']}"}
        async with httpx.AsyncClient(base_url=self.url, headers=admin) as client:
            for tenant in data.TENANTS:
                created = await client.post("/v1/tenants", json={"id": tenant})
                assert created.status_code in (201, 409), created.text
                key = await client.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]})
                self.keys[tenant] = key.json()["key"]

    async def caught_up(self, conn: asyncpg.Connection, timeout_s: float = 600) -> float:
        """Wait until the projection has applied the whole log; returns when it got there."""
        end = await log_end(self.bootstrap, self.topic)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            applied = {r["log_partition"]: r["next_offset"] for r in await conn.fetch(
                "SELECT log_partition, next_offset FROM projection_offsets")}
            if all(applied.get(p, 0) >= offset for p, offset in end.items()):
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError("the projector did not catch up with the log")

    async def create_tenant(self, tenant: str) -> str:
        """A tenant created through the API (on the log) and a read/write key for it."""
        admin = {"Authorization": f"Bearer {self.env['LEDGER_ADMIN_TOKEN']}"}
        async with httpx.AsyncClient(base_url=self.url, headers=admin, timeout=30) as client:
            created = await client.post("/v1/tenants", json={"id": tenant})
            assert created.status_code in (201, 409), created.text
            key = await client.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]})
        return str(key.json()["key"])


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "uname": " ".join(os.uname()), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime())}
