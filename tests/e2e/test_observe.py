"""The operator's dashboard on a real Prometheus: the rules pass promtool, and under load every panel of
`infra/grafana/ledger.json` has data and every rule group is loaded and healthy.

Prometheus is Debian's package (`tools.observe` installs it with apt-get when missing and we are root). It
scrapes this session's API, dispatcher and a projector every second and evaluates the rules every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import Tenant, create_tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.receiver import Receiver
from tests.stack import Stack, unique
from tools import observe, processes
from tools.local import ROOT
from tools.testing import free_port

DASHBOARD = ROOT / "infra" / "grafana" / "ledger.json"
LOAD_S = 20.0
WORKERS = 2
EVALUATIONS = 3  # rule evaluations (1 s apart) after the load, before the panels are queried
EVALUATED_TIMEOUT_S = 15.0
TAKEOVER_TIMEOUT_S = 30.0
# Grafana's variables, as it would expand them (at 1 s scrapes `$__rate_interval` would be 4 s; 30 s keeps
# several samples in every window).
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "30s", "$__range": "5m"}


def panel_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of every panel, those of collapsed rows included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend((panel.get("title", "?"), target["expr"]) for target in panel.get("targets", [])
                         if target.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def expanded(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not expand: {expr}"
    return expr


def seconds(stamp: str) -> float:
    """Prometheus's RFC 3339 times (nanoseconds) as Unix seconds."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")).timestamp()


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


async def wait_serving(port: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
    async with httpx.AsyncClient(timeout=1) as client:
        while True:
            assert proc.poll() is None, f"the observed projector exited; see {log}"
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"the projector served no metrics on {port}; see {log}"
            await asyncio.sleep(0.1)


async def committed(tenant: Tenant) -> None:
    """Until a wait=true transfer commits: a projector owns the tenant's partition and applies."""
    deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
    while True:
        answer = await transfer(tenant.client, tenant.id, posting("@world", "alice", 1_000_000))
        if answer.status_code == 201:
            return
        assert answer.status_code == 202 and time.monotonic() < deadline, answer.text
        await asyncio.sleep(0.5)


async def drive(tenant: Tenant, limited: Tenant, seconds_: float) -> dict[str, int]:
    """Transfers waited for, rejected ones (insufficient funds), idempotent replays and reads from a few
    workers, and reads past a limit by another tenant; the count of each answer."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + seconds_

    def count(what: str, response: httpx.Response) -> None:
        key = f"{what} {response.status_code}"
        seen[key] = seen.get(key, 0) + 1

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            count("transfer", await transfer(tenant.client, tenant.id, posting("alice", "bob", 1)))
            if i % 3 == 0:
                count("overdraw", await transfer(tenant.client, tenant.id, posting("bob", "carol", 10**12)))
            if i % 4 == 0:
                key = unique("k")
                for _ in range(2):
                    count("keyed", await transfer(tenant.client, tenant.id, posting("alice", "dave", 1), key=key))
            count("read", await tenant.client.get(tenant.path("/accounts/alice")))
            if i % 5 == 0:
                count("list", await tenant.client.get(tenant.path("/transactions")))

    async def limited_reads() -> None:
        while time.monotonic() < deadline:
            for _ in range(4):
                count("limited", await limited.client.get(limited.path("/accounts/alice")))
            await asyncio.sleep(2)

    await asyncio.gather(*(worker(n) for n in range(WORKERS)), limited_reads())
    return seen


async def prometheus_get(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    answer = await client.get(path, params=params)
    assert answer.status_code == 200, f"{path} {params}: {answer.status_code} {answer.text}"
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


async def evaluated_since(client: httpx.AsyncClient, since: float) -> list[dict[str, Any]]:
    """Every rule group once each has been evaluated EVALUATIONS times after `since` (Prometheus's clock)."""
    deadline = time.monotonic() + EVALUATED_TIMEOUT_S
    while True:
        groups: list[dict[str, Any]] = (await prometheus_get(client, "/api/v1/rules"))["groups"]
        late = [g["name"] for g in groups if seconds(g["lastEvaluation"]) < since + EVALUATIONS]
        if groups and not late:
            return groups
        assert time.monotonic() < deadline, f"rule groups not evaluated {EVALUATIONS} times since the load: {late}"
        await asyncio.sleep(0.5)


async def test_every_panel_has_data_and_every_rule_is_healthy_on_a_real_prometheus(
    stack: Stack, tenant: Tenant, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    observe.check_rules()
    expressions = panel_expressions(json.loads(DASHBOARD.read_text()))
    assert expressions, f"no panel queries in {DASHBOARD}"
    rule_groups = yaml.safe_load(observe.RULES.read_text())["groups"]

    stack.ensure_dispatcher()
    targets = {"api": [host_port(stack.api_url)],
               "dispatcher": [f"127.0.0.1:{stack.dispatcher_env['LEDGER_DISPATCHER_METRICS_PORT']}"]}
    # make test starts the session's projector without a metrics port (tests/stack.py). Then one that serves
    # metrics takes its place for this test (as a second member of its group, the first stopped so that the
    # observed one applies, and counts the outcomes of, every partition), and the first comes back after.
    observed: subprocess.Popen[bytes] | None = None
    metrics_port = stack.env.get("LEDGER_PROJECTOR_METRICS_PORT", "0")
    limited = await create_tenant(admin, stack)
    try:
        if metrics_port in ("", "0"):
            metrics_port = str(free_port())
            log = stack.logs / "projector-observed.log"
            observed = processes.spawn("projections.app", {**stack.env, "LEDGER_PROJECTOR_METRICS_PORT": metrics_port},
                                       log)
            await wait_serving(metrics_port, observed, log)
            assert stack.projector is not None
            if stack.projector.poll() is None:
                stack.kill_projector(signal.SIGTERM)
        else:
            stack.ensure_projector()
        targets["projector"] = [f"127.0.0.1:{metrics_port}"]
        await committed(tenant)
        # Reads past a limit of 1 a second (burst 1 s): 429 rate_limited.
        limits = await admin.put(limited.path("/limits"), json={"reads_per_s": 1, "burst_s": 1})
        assert limits.status_code == 200, limits.text

        port = free_port()
        prometheus = observe.start(targets, port, tmp_path)
        try:
            # One endpoint that acknowledges (delivered, with latency), one that answers 500 (failed, and its
            # deliveries stay pending: a backlog).
            async with Receiver() as good, Receiver(answer=lambda n: 500) as failing, \
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                hooks = []
                try:
                    for receiver in (good, failing):
                        created = await tenant.client.post(tenant.path("/webhooks"),
                                                           json={"url": receiver.url(), "events": ["*"]})
                        assert created.status_code == 201, created.text
                        hooks.append(created.json()["id"])
                    seen = await drive(tenant, limited, LOAD_S)
                    for wanted in ("transfer 201", "overdraw 409", "keyed 200", "read 200", "limited 429"):
                        assert seen.get(wanted), f"the load never saw {wanted}: {seen}"
                    assert good.received and failing.received, "the dispatcher delivered nothing"
                    now = float((await prometheus_get(client, "/api/v1/query", query="time()"))["result"][1])
                    groups = await evaluated_since(client, now)

                    expected = {g["name"]: len(g["rules"]) for g in rule_groups}
                    loaded = {g["name"]: len(g["rules"]) for g in groups}
                    assert loaded == expected, f"rule groups loaded {loaded}, in {observe.RULES.name} {expected}"
                    unhealthy = [(r["name"], r["health"], r.get("lastError")) for g in groups for r in g["rules"]
                                 if r["health"] != "ok"]
                    assert not unhealthy, f"rules not healthy: {unhealthy}"

                    empty = []
                    for title, expr in expressions:
                        data = await prometheus_get(client, "/api/v1/query", query=expanded(expr))
                        if not data["result"]:
                            empty.append(f"{title}: {expr}")
                    assert not empty, "panel queries with no data under load:\n  " + "\n  ".join(empty)
                finally:
                    for webhook in hooks:  # the failing endpoint's deliveries are cancelled, not retried for ever
                        await tenant.client.delete(tenant.path(f"/webhooks/{webhook}"))
        finally:
            observe.stop(prometheus)
    finally:
        await limited.client.aclose()
        if observed is not None:
            stack.ensure_projector()
            processes.stop(observed, "observed projector")
            await stack.caught_up(timeout_s=60, restart=True)
