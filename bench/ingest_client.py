"""Appends through the producer client, timed to their outcomes (`make bench`, step `client`)."""

from __future__ import annotations

import asyncio
import time

from aiokafka.errors import KafkaError

from bench import data
from bench.ingest import transfer
from bench.stack import Bench
from client import LedgerProducer
from tools.local import say


async def ingest_client(bench: Bench, rate: int) -> None:
    """Open loop through the producer client: `rate` requests/s, each timed from its scheduled send to
    its outcome read back from `ledger.outcomes` (append + projector commit + outcome delivery)."""
    count = rate * bench.duration_s
    latencies: list[float] = []
    errors = 0
    async with LedgerProducer(bench.bootstrap, topic=bench.topic, outcomes_topic=bench.cfg.outcomes_topic) as ledger:
        started = time.perf_counter() + 0.1

        async def one(n: int) -> None:
            nonlocal errors
            scheduled = started + n / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                outcome = await ledger.outcome(await ledger.submit(data.TENANTS[n % 10], transfer(n)), 30)
                if outcome["status"] != "committed":
                    errors += 1
            except (KafkaError, TimeoutError):
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

        await asyncio.gather(*[one(n) for n in range(count)])
    latencies.sort()
    row = {"rate": rate, "requests": count, "errors": errors, "achieved_rps": round(count / bench.duration_s, 1),
           "p50_ms": latencies[len(latencies) // 2], "p95_ms": latencies[int(len(latencies) * 0.95)],
           "p99_ms": latencies[int(len(latencies) * 0.99)], "max_ms": latencies[-1]}
    bench.results.setdefault("ingest_client", []).append(row)
    say(f"producer client, append to outcome @ {rate}/s: p50 {row['p50_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms, errors {errors}")
