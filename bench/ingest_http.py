"""Transfers over HTTP with `wait=true`, open loop (`make bench`, step `http`)."""

from __future__ import annotations

import json

from bench import data, tools
from bench.stack import Bench
from tools.local import say


def ingest_http(bench: Bench, rate: int) -> None:
    bodies = bench.logs / "bodies"
    bodies.mkdir(exist_ok=True)
    lines = []
    for n in range(50):
        tenant = data.TENANTS[n % 10]
        body = bodies / f"{n}.json"
        body.write_text(json.dumps({"postings": [
            {"source": "@world", "destination": f"http-{n}", "amount": 5, "asset": "USD/2"}]}))
        lines.append(f"POST {bench.url}/v1/tenants/{tenant}/transactions?wait=true\n"
                     f"Authorization: Bearer {bench.keys[tenant]}\nContent-Type: application/json\n@{body}\n")
    row = tools.attack("\n".join(lines), rate, bench.duration_s)
    bench.results.setdefault("ingest_http_wait", []).append(row)
    say(f"POST ?wait=true @ {rate}/s: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
        f"errors {row['errors']} {row['status_codes']}")


def ingest_https(bench: Bench, rates: list[int]) -> None:
    for rate in rates:
        ingest_http(bench, rate)
