"""History pages near the newest entry and 100,000 entries deep (`make bench`, step `history`), and what a page
of 20 costs the API and PostgreSQL at saturation (issue 24: at most 100 API CPU-µs, a balance read's cost)."""

from __future__ import annotations

from typing import Any

from api.inputs import encode_cursor
from bench import data, tools
from bench.stack import Bench
from infra import settings as settings_mod
from ledger.positions import PositionKey
from tools.local import say

DEEP = 150_000  # entries in the deep account's history, loaded before the steps (run.py)


def history(bench: Bench) -> None:
    tenant = "bench-00"
    key = bench.keys[tenant]
    base = f"{bench.url}/v1/tenants/{tenant}/accounts/{data.DEEP_ACCOUNT}/entries?limit=50"
    # Cursors are sealed for their tenant with the API's key, which this run's environment holds.
    positions = PositionKey(settings_mod.require_position_key(bench.cfg, "make bench"))
    deep_cursor = encode_cursor(positions, tenant, DEEP - 100_000 + 1, 1)
    rows = {}
    for label, url in (("depth_0", base), ("depth_100000", f"{base}&cursor={deep_cursor}")):
        rows[label] = tools.attack(f"GET {url}\nAuthorization: Bearer {key}\n", 500, bench.duration_s)
        say(f"history {label} @ 500/s: p50 {rows[label]['p50_ms']:.2f} ms, p99 {rows[label]['p99_ms']:.2f} ms")
    page = f"{bench.url}/v1/tenants/{tenant}/accounts/{data.DEEP_ACCOUNT}/entries?limit=20"
    script = bench.logs / "history.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    with bench.limit_lifted(tenant, "reads_per_s"):
        tools.saturate(page, 2, 64, str(script))  # warm
        meter = tools.CpuMeter().start()
        run = tools.saturate(page, bench.duration_s, 64, str(script))
        cpu = meter.stop(digits=3)
    per_page = tools.per_request_us(cpu, run["rps"], digits=1)
    bench.results["history_cost"] = {"rps": run["rps"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
                                     "non_2xx": run["errors"], "cpu_us_per_page": per_page}
    say(cost_line(bench.results["history_cost"]))
    bench.results["history"] = rows


def cost_line(cost: dict[str, Any]) -> str:
    per_page = cost["cpu_us_per_page"]
    return (f"history page of 20 at saturation (wrk, 64 connections): {cost['rps']:.0f}/s, non-2xx {cost['non_2xx']}; "
            "CPU-us per page: " + ", ".join(f"{role} {us}" for role, us in per_page.items()))
