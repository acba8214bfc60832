"""History pages near the newest entry and 100,000 entries deep (`make bench`, step `history`)."""

from __future__ import annotations

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
    bench.results["history"] = rows
