"""Issue 24's matrix (`make bench`, step `matrix`): the write shapes Formance benchmarks, each at 1 and 64
connections, `wait=true` and unwaited, with the rate, p50/p99 and CPU-µs per write by process role.

Shapes, over 10,000 funded accounts `users:1..10000` (amount 1, asset USD/2):
- `hot_destination`: the unbounded source (`@world`) into one account;
- `hot_source`: one funded account into uniformly chosen ones;
- `both_hot`: one account into another, always the same two;
- `uniform`: one account into another, both uniform;
- `zipfian`: one account into another, both zipfian (s = 1: account k is chosen in proportion to 1/k);
- `postings_100`: one transaction of 100 postings, each uniform as in `uniform`.

A `Target` says how a ledger takes a transaction, so `bench.formance` runs the same cells against Formance
Ledger v2 (whose writes answer once committed, as ours with `wait=true`). An unwaited cell's CPU counts from
its first request until the projector has applied the last one accepted, so its cost per write is the whole
cost of deciding and storing it, not only of appending it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import asyncpg
import httpx

from bench import tools
from bench.stack import Bench
from tools.local import say

ACCOUNTS = 10_000
FUNDS = 10**12  # each account's, in minor units: no cell runs one dry, and @world's total stays far inside 64 bits
FUND_POSTINGS = 128  # postings per funding transaction (the contract's most)
SHAPES = ("hot_destination", "hot_source", "both_hot", "uniform", "zipfian", "postings_100")
CONNECTIONS = (1, 64)
TENANT = "matrix"
STACK_ROLES = ("api", "projector", "postgres", "kafka")
ANSWER_TIMEOUT_S = 10  # wrk's default 2 s dropped Formance's slow 100-posting answers from the figures
WARM_S = 5  # before the first cell: a stack just started spends CPU on its own (the JVM's compiler, first writes)

# One wrk script per cell: each request a new body. `setup` numbers the threads so each seeds its own sequence.
SCRIPT = Template(r"""
local N, shape, world, path = $accounts, "$shape", "$world", "$path"
local headers = { ["Content-Type"] = "application/json"$auth }
local cdf = nil
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + (number or 0) * 7919)
  if shape == "zipfian" then
    cdf = {}
    local total = 0
    for k = 1, N do total = total + 1 / k; cdf[k] = total end
    for k = 1, N do cdf[k] = cdf[k] / total end
  end
end
local function uniform() return "users:" .. math.random(1, N) end
local function zipf()
  local u, lo, hi = math.random(), 1, N
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return "users:" .. lo
end
local function posting(s, d)
  return '{"source":"' .. s .. '","destination":"' .. d .. '","amount":1,"asset":"USD/2"}'
end
local function pair(pick)
  local s, d = pick(), pick()
  while d == s do d = pick() end
  return posting(s, d)
end
request = function()
  local body
  if shape == "hot_destination" then body = posting(world, "hot:destination")
  elseif shape == "hot_source" then body = posting("hot:source", uniform())
  elseif shape == "both_hot" then body = posting("hot:source", "hot:destination")
  elseif shape == "uniform" then body = pair(uniform)
  elseif shape == "zipfian" then body = pair(zipf)
  else
    local p = {}
    for i = 1, 100 do p[i] = pair(uniform) end
    body = table.concat(p, ",")
  end
  return wrk.format("POST", path, headers, '{"postings":[' .. body .. ']}')
end
""")


@dataclass(frozen=True)
class Target:
    """How a ledger takes a transaction: its base URL and path, the bearer token if any, what it calls the
    unbounded source, the query string of each mode, and the process roles its CPU counts as."""

    name: str
    base: str
    path: str
    world: str
    modes: dict[str, str]  # mode -> query string ("" for none)
    roles: tuple[str, ...]
    token: str | None = None
    # After an unwaited cell: until what was accepted is applied (ours), so its CPU is counted whole.
    settle: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)

    def script(self, directory: Path, shape: str, mode: str) -> str:
        auth = f', ["Authorization"] = "Bearer {self.token}"' if self.token else ""
        query = self.modes[mode]
        text = SCRIPT.substitute(accounts=ACCOUNTS, shape=shape, world=self.world, auth=auth,
                                 path=self.path + (f"?{query}" if query else ""))
        path = directory / f"matrix-{self.name}-{shape}-{mode}.lua"
        path.write_text(text)
        return str(path)

    def fund(self) -> None:
        """Every account of the shapes funded from the unbounded source, FUND_POSTINGS a transaction, each
        answered once committed."""
        names = ["hot:source", *(f"users:{i}" for i in range(1, ACCOUNTS + 1))]
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        query = self.modes["waited" if "waited" in self.modes else next(iter(self.modes))]
        with httpx.Client(base_url=self.base, headers=headers, timeout=60) as client:
            for i in range(0, len(names), FUND_POSTINGS):
                postings = [{"source": self.world, "destination": n, "amount": FUNDS, "asset": "USD/2"}
                            for n in names[i:i + FUND_POSTINGS]]
                answer = client.post(self.path + (f"?{query}" if query else ""), json={"postings": postings})
                assert answer.status_code in (200, 201), answer.text


async def run_matrix(target: Target, directory: Path, duration_s: int) -> list[dict[str, Any]]:
    """Every cell of the matrix against `target`: shape x mode x connections."""
    target.fund()
    tools.saturate(target.base + target.path, WARM_S, 64, target.script(directory, SHAPES[0], next(iter(target.modes))),
                   timeout_s=ANSWER_TIMEOUT_S)
    cells = []
    for shape in SHAPES:
        for mode in target.modes:
            script = target.script(directory, shape, mode)
            url = target.base + target.path
            tools.saturate(url, 1, 64, script, timeout_s=ANSWER_TIMEOUT_S)  # warm: plans, the shape's accounts
            if target.settle is not None:
                await target.settle()
            for connections in CONNECTIONS:
                cell = await _cell(target, url, script, connections, duration_s, mode)
                cells.append({"shape": shape, "mode": mode, "connections": connections, **cell})
                say(cell_line(target.name, cells[-1]))
    return cells


async def _cell(target: Target, url: str, script: str, connections: int, duration_s: int,
                mode: str) -> dict[str, Any]:
    meter = tools.CpuMeter().start()
    began = time.monotonic()
    run = tools.saturate(url, duration_s, connections, script, timeout_s=ANSWER_TIMEOUT_S)
    if target.settle is not None and mode != "waited":
        await target.settle()
    elapsed = time.monotonic() - began
    cpu = meter.stop(digits=3)
    accepted = run["requests"] - run["errors"]
    per_write = tools.per_request_us(cpu, accepted / elapsed if accepted else 0)
    return {"writes_per_s": round(accepted / duration_s), "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
            "accepted": accepted, "non_2xx": run["errors"], "socket_errors": run["socket_errors"],
            "settle_s": round(elapsed - duration_s, 2), "cpu_us_per_write": per_write,
            "cpu_us_per_write_total": round(sum(per_write.get(r, 0) for r in target.roles)), "cpu": cpu}


def cell_line(name: str, cell: dict[str, Any]) -> str:
    return (f"{name} {cell['shape']}, {cell['mode']}, {cell['connections']} conn: {cell['writes_per_s']}/s, "
            f"p50 {cell['p50_ms']} ms, p99 {cell['p99_ms']} ms, non-2xx {cell['non_2xx']}; CPU-us a write "
            f"{cell['cpu_us_per_write_total']} (" +
            ", ".join(f"{r} {cell['cpu_us_per_write'].get(r, 0):.0f}" for r in ("api", "projector", "postgres",
                                                                                "kafka", "formance", "formance_pg")
                      if r in cell["cpu_us_per_write"]) + ")")


def table(ours: list[dict[str, Any]], peer: list[dict[str, Any]] | None = None, peer_mode: str = "sync") -> list[str]:
    """The matrix as a table, CPU per write first; with `peer` (Formance's cells), its figures beside ours
    waited, which answer as its writes do: once committed."""
    head = "| shape | conn | mode | CPU-us a write (API, projector, PostgreSQL, Kafka) | writes/s | p50 ms | p99 ms |"
    if peer:
        head += " Formance CPU-us a write | Formance writes/s | Formance p50 ms | Formance p99 ms |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    by_peer = {(c["shape"], c["connections"]): c for c in peer or []}
    for c in ours:
        roles = "/".join(f"{c['cpu_us_per_write'].get(r, 0):.0f}" for r in STACK_ROLES)
        row = (f"| {c['shape']} | {c['connections']} | {c['mode']} | **{c['cpu_us_per_write_total']}** ({roles}) | "
               f"{c['writes_per_s']} | {c['p50_ms']} | {c['p99_ms']} |")
        if peer:
            p = by_peer.get((c["shape"], c["connections"])) if c["mode"] == "waited" else None
            row += (f" {p['cpu_us_per_write_total']} | {p['writes_per_s']} | {p['p50_ms']} | {p['p99_ms']} |"
                    if p else " | | | |")
        lines.append(row)
    return lines


def duration(bench: Bench) -> int:
    """Seconds a cell: 24 of ours and 12 of a peer's fit in a few minutes."""
    return 3 if bench.quick else 6


async def matrix(bench: Bench, owner: asyncpg.Connection) -> None:
    """Ours: a tenant of its own, its write limit out of reach (the backlog of unwaited appends still
    throttles, as it does for any tenant)."""
    key = await bench.create_tenant(TENANT)

    async def settle() -> None:
        await bench.caught_up(owner)

    target = Target("ledger", bench.url, f"/v1/tenants/{TENANT}/transactions", "@world",
                    {"waited": "wait=true", "unwaited": ""}, STACK_ROLES, key, settle)
    with bench.limit_lifted(TENANT, "writes_per_s"):
        cells = await run_matrix(target, bench.logs, duration(bench))
    bench.results["matrix"] = cells
