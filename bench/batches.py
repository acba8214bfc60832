"""Transfers a second, one per request against batches of 100 (`make bench`, step `batches`)."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.stack import Bench
from tools.local import say


async def batches_vs_singles(bench: Bench) -> None:
    """Closed loop for a few seconds: transfers committed per second posting one at a time (16 clients)
    against posting batches of 100 (4 clients), both with wait=true, same run."""
    key = await bench.create_tenant("bench-batches")
    headers = {"Authorization": f"Bearer {key}"}
    seconds = 3 if bench.quick else 6
    funded = {"postings": [{"source": "@world", "destination": "payer", "amount": 10**15, "asset": "USD/2"}]}
    one = {"postings": [{"source": "payer", "destination": "payee", "amount": 1, "asset": "USD/2"}]}
    results = {}
    async with httpx.AsyncClient(base_url=bench.url, headers=headers, timeout=30) as client:
        await client.post("/v1/tenants/bench-batches/transactions?wait=true", json=funded)
        for label, clients, size in (("single", 16, 1), ("batch_100", 4, 100)):
            committed = 0
            deadline = time.monotonic() + seconds

            async def worker(deadline: float = deadline, size: int = size) -> None:
                nonlocal committed
                while time.monotonic() < deadline:
                    if size == 1:
                        r = await client.post("/v1/tenants/bench-batches/transactions?wait=true", json=one)
                        committed += r.status_code == 201
                    else:
                        r = await client.post("/v1/tenants/bench-batches/transactions/batch?wait=true",
                                              json={"transactions": [one] * size})
                        committed += sum(t["status"] == "committed" for t in r.json()["transactions"])

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(clients)))
            results[label] = round(committed / (time.monotonic() - started))
    results["ratio"] = round(results["batch_100"] / results["single"], 1)
    bench.results["batches"] = results
    say(f"committed transfers/s: single posts {results['single']}, batches of 100 {results['batch_100']} "
        f"({results['ratio']}x)")
