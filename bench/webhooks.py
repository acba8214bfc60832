"""Events out, measured (`make bench`, step `webhooks`): from a decision's publication to its delivery's
acknowledgement by a local receiver, p50/p99, while transfers are written at 200/s and at 500/s, each as the
ratio to the same run's `wait=true` write latency (what a client waiting for the decision itself sees); and what
a delivered event costs the dispatcher in CPU.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import data, tools
from bench.stack import Bench
from tools.local import say

RATES = (200, 500)
BASELINE_WRITES = 200
DRAIN_TIMEOUT_S = 60


class _Receiver:
    """Answers 200 to everything and notes when each event arrived (wall clock, as `created_at` is)."""

    def __init__(self) -> None:
        self.arrived: list[tuple[float, bytes]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            body = await reader.readexactly(length)
            self.arrived.append((time.time(), body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(url: str, tenant: str, key: str, duration_s: int, bodies: Path) -> dict[str, Any]:
    """At each of `RATES`: the delivery latency and what a delivery costs, against a waited write's latency."""
    return {str(rate): await _measure(url, tenant, key, duration_s, bodies, rate) for rate in RATES}


async def _measure(url: str, tenant: str, key: str, duration_s: int, bodies: Path, rate: int) -> dict[str, Any]:
    receiver = _Receiver()
    port = await receiver.start()
    auth = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:
            created = await client.post(f"/v1/tenants/{tenant}/webhooks", json={
                "url": f"http://localhost:{port}/bench", "events": ["transaction.committed"]})
            assert created.status_code == 201, created.text
            hook_id = created.json()["id"]
            waited: list[float] = []
            for _ in range(BASELINE_WRITES):
                started = time.perf_counter()
                sent = await client.post(f"/v1/tenants/{tenant}/transactions", params={"wait": "true"}, json={
                    "postings": [{"source": "@world", "destination": "hooked", "amount": 1, "asset": "USD/2"}]})
                assert sent.status_code == 201, sent.text
                waited.append((time.perf_counter() - started) * 1000)
            await _drain(receiver, BASELINE_WRITES)
            receiver.arrived.clear()
            bodies.mkdir(parents=True, exist_ok=True)
            body = bodies / "hooked.json"
            body.write_text('{"postings":[{"source":"@world","destination":"hooked","amount":1,"asset":"USD/2"}]}')
            targets = (f"POST {url}/v1/tenants/{tenant}/transactions\nAuthorization: Bearer {key}\n"
                       f"Content-Type: application/json\n@{body}\n")
            meter = tools.CpuMeter().start()
            load = await asyncio.to_thread(tools.attack, targets, rate, duration_s)
            accepted = sum(n for code, n in load["status_codes"].items() if code.startswith("2"))
            drained_s = await _drain(receiver, accepted)
            cpu = meter.stop()
            elapsed = duration_s + drained_s
            await client.delete(f"/v1/tenants/{tenant}/webhooks/{hook_id}")
    finally:
        receiver.close()
    latencies = [(arrived - datetime.fromisoformat(orjson.loads(raw)["created_at"]).timestamp()) * 1000
                 for arrived, raw in receiver.arrived]
    ids = {orjson.loads(raw)["id"] for _, raw in receiver.arrived}
    p50, p99 = _pct(latencies, 0.50), _pct(latencies, 0.99)
    base50, base99 = _pct(waited, 0.50), _pct(waited, 0.99)
    dispatcher_us = cpu.get("dispatcher", 0.0) * elapsed * 1e6 / max(1, len(ids))
    return {"rate": rate, "writes_accepted": accepted, "events_delivered": len(ids),
            "duplicates": len(receiver.arrived) - len(ids),
            "p50_ms": round(p50, 1), "p99_ms": round(p99, 1),
            "write_waited_p50_ms": round(base50, 1), "write_waited_p99_ms": round(base99, 1),
            "ratio_p50": round(p50 / base50, 2), "ratio_p99": round(p99 / base99, 2),
            "dispatcher_cpu_us_per_event": round(dispatcher_us), "cpu": cpu}


async def _drain(receiver: _Receiver, count: int) -> float:
    started = time.monotonic()
    while len({raw for _, raw in receiver.arrived}) < count and time.monotonic() - started < DRAIN_TIMEOUT_S:
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def webhooks(bench: Bench) -> None:
    """Events out: decision published to delivery acknowledged, at 500 transfers/s to a local receiver."""
    tenant = data.TENANTS[-1]
    results = await measure(bench.url, tenant, bench.keys[tenant], bench.duration_s, bench.logs / "bodies")
    bench.results["webhooks"] = results
    for result in results.values():
        say(f"webhooks at {result['rate']}/s: delivered {result['events_delivered']} of "
            f"{result['writes_accepted']} (duplicates {result['duplicates']}); p50 {result['p50_ms']} ms "
            f"({result['ratio_p50']}x a waited write's), p99 {result['p99_ms']} ms ({result['ratio_p99']}x); "
            f"dispatcher {result['dispatcher_cpu_us_per_event']} CPU-µs/event; {tools.cpu_text(result['cpu'])}")
