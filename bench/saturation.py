"""Balance reads against a static route at saturation (`make bench`, step `saturation`): wrk, 64 connections."""

from __future__ import annotations

import random
import re
from pathlib import Path

import httpx

from bench import tools
from bench.stack import Bench
from tools.local import ROOT, say


def _lua_targets(bench: Bench, accounts: int) -> Path:
    rng = random.Random(2)
    rows = []
    for _ in range(5000):
        i = rng.randint(1, accounts)
        tenant = f"bench-{i % 10:02d}"
        rows.append(f'{{"/v1/tenants/{tenant}/accounts/acct-{i}", "{bench.keys[tenant]}"}}')
    path = bench.logs / "targets.lua"
    path.write_text("return {\n" + ",\n".join(rows) + "\n}\n")
    return path


def saturation(bench: Bench, accounts: int) -> None:
    script = str(ROOT / "bench" / "balance.lua")
    env = {"LEDGER_BENCH_TARGETS": str(_lua_targets(bench, accounts))}
    balance = tools.saturate(bench.url, bench.duration_s, script=script, env=env)
    static = tools.saturate(f"{bench.url}/healthz", bench.duration_s)
    ratio = balance["rps"] / static["rps"]
    cache = _cache_counts(bench.url)
    bench.results["saturation"] = {"balance": balance, "static": static, "ratio": round(ratio, 3),
                                   "api_workers": bench.cfg.api_workers, "cache": cache}
    say(f"saturation: balance {balance['rps']:.0f} req/s vs static {static['rps']:.0f} req/s = {ratio:.2f}x "
        f"(target 0.5x); balance cache since start: {cache}")


def _cache_counts(url: str) -> dict[str, float]:
    """The balance cache's counts from /metrics (one worker's, when there are several)."""
    text = httpx.get(f"{url}/metrics").text
    found = dict(re.findall(r'^ledger_api_balance_cache_reads_total\{result="(\w+)"\} (\S+)$', text, re.M))
    hits, misses = float(found.get("hit", 0)), float(found.get("miss", 0))
    return {"hits": hits, "misses": misses, "hit_ratio": round(hits / (hits + misses), 4) if hits else 0.0}
