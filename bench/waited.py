"""What one waited write costs the stack (`make bench`, step `waited`): `wait=true` deposits into one account,
64 connections of wrk for the step's duration, and the CPU each process role used over the run, per write.
CPU per write holds on a noisy machine where rates do not (issue 24 compares it with Formance's and with the
post-mortem's targets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import data, tools
from bench.stack import Bench
from tools.local import say

CONNECTIONS = 64
STACK_ROLES = ("api", "projector", "postgres", "kafka")


def _run(target: str, script: str, duration_s: int) -> dict[str, Any]:
    meter = tools.CpuMeter().start()
    run = tools.saturate(target, duration_s, CONNECTIONS, script)
    cpu = meter.stop(digits=3)
    per_write = tools.per_request_us(cpu, run["rps"])
    return {"connections": CONNECTIONS, "writes_per_s": round(run["rps"]), "p50_ms": run["p50_ms"],
            "p99_ms": run["p99_ms"], "non_2xx": run["errors"], "cpu_us_per_write": per_write,
            "stack_cpu_us_per_write": sum(per_write.get(r, 0) for r in STACK_ROLES), "cpu": cpu}


def measure(url: str, tenant: str, key: str, duration_s: int, directory: Path) -> dict[str, Any]:
    """Writes a second, latency, and CPU-µs per write by role; `stack` sums the API, the projector,
    PostgreSQL and Kafka. Run twice, the figures being the second run's: the first on a fresh stack (`first`)
    cost it 1.3-1.7 times as much, mostly PostgreSQL and Kafka (new tables' and segments' first writes)."""
    target = f"{url}/v1/tenants/{tenant}/transactions?wait=true"
    script = tools.post_script(directory, "waited", key, "waited")
    tools.saturate(target, 2, CONNECTIONS, script)  # warm: connections open, plans cached
    first = _run(target, script, duration_s)
    return {**_run(target, script, duration_s), "first": first}


def lines(result: dict[str, Any], label: str = "waited writes") -> list[str]:
    out = []
    for name, row in (("", result), (" (the run before, on the fresh stack)", result.get("first"))):
        if row is None:
            continue
        roles = ", ".join(f"{role} {us}" for role, us in row["cpu_us_per_write"].items())
        out.append(f"{label}{name} (POST ?wait=true, one account, {row['connections']} connections): "
                   f"{row['writes_per_s']}/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                   f"non-2xx {row['non_2xx']}; CPU-us per write: stack {row['stack_cpu_us_per_write']} ({roles})")
    return out


def scale_lines(at_scale: dict[str, Any], fresh: dict[str, Any] | None, transactions: int) -> list[str]:
    """The waited write on a ledger holding `transactions`, and PostgreSQL's cost per write against the fresh
    database's (the `waited` step of the same run), which issue 24 wants within 1.5x."""
    line = lines(at_scale, f"waited writes with {transactions:,} transactions held")[0]
    if fresh is None:
        return [line]
    pg, pg_fresh = at_scale["cpu_us_per_write"].get("postgres", 0), fresh["cpu_us_per_write"].get("postgres", 0)
    ratio = f"{pg / pg_fresh:.2f}x" if pg_fresh else "n/a"
    return [line, f"  PostgreSQL {pg} CPU-us a write against {pg_fresh} on the fresh database: {ratio} (target 1.5x); "
                  f"the stack {at_scale['stack_cpu_us_per_write']} against {fresh['stack_cpu_us_per_write']}"]


def measured(bench: Bench, tenant: str, key: str) -> dict[str, Any]:
    """`measure` under a write limit the tenant never reaches."""
    with bench.limit_lifted(tenant, "writes_per_s"):
        return measure(bench.url, tenant, key, bench.duration_s, bench.logs)


def waited(bench: Bench) -> None:
    """What one waited write costs the stack, per process role (issue 24's first figure)."""
    tenant = data.TENANTS[0]
    bench.results["waited"] = measured(bench, tenant, bench.keys[tenant])
    say(lines(bench.results["waited"])[0])
