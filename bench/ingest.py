"""Ingest straight to Kafka, the projector's catch-up timed (`make bench`, steps `ingest`, `ingest2`, `pure`, `mix`)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from bench import ceiling, data, tools
from bench.stack import PRODUCE_CONCURRENCY_MAX, RESULTS, Bench
from client import LedgerProducer
from ledger.requests import Posting
from tools.local import say


async def ingest_direct(bench: Bench, owner: asyncpg.Connection, count: int, mix: bool = False,
                        processes_count: int | None = None, pure: bool = False) -> None:
    """Stop the projector, append `count` requests with the producer client, restart the projector (with
    `processes_count` processes, else as configured) and time the catch-up alone. Transfers of two postings;
    with `mix`, half of them holds of two postings and half captures of those holds. With `pure`, the
    projector runs `ledger/` as Python rather than as mypyc built it."""
    n = processes_count or bench.cfg.projectors
    bench.stop_projectors()
    run = secrets.token_hex(3)
    async with LedgerProducer(bench.bootstrap, follow_outcomes=False, topic=bench.topic) as ledger:
        for first in range(0, count, PRODUCE_CONCURRENCY_MAX):
            last = min(count, first + PRODUCE_CONCURRENCY_MAX)
            if not mix:
                await asyncio.gather(*[ledger.submit(data.TENANTS[n % 10], transfer(n))
                                       for n in range(first, last)])
                continue
            # Holds first, then their captures: each lands after its hold on the tenant's partition.
            await asyncio.gather(*[ledger.hold(data.TENANTS[n % 10], _held(n), id=f"h{run}-{n}")
                                   for n in range(first, last, 2)])
            await asyncio.gather(*[ledger.capture(data.TENANTS[(n - 1) % 10], f"h{run}-{n - 1}")
                                   for n in range(first + 1, last, 2)])
    before = await owner.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets")
    await owner.execute("SELECT pg_stat_statements_reset()")
    since = await ceiling.applied(owner)
    wal_before = await ceiling.wal_bytes(owner)
    lsn_before = await ceiling.wal_lsn(owner)
    bench.spawn_projectors(n, **({"LEDGER_PURE": "1"} if pure else {}))
    profile = _profile(bench.projectors[0].pid, "mix" if mix else "ingest")
    while await owner.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets") == before:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    meter = tools.CpuMeter().start()
    first = await owner.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets")
    finished = await bench.caught_up(owner)
    cpu = meter.stop()
    wal = await ceiling.wal_bytes(owner) - wal_before
    if profile is not None:
        profile.send_signal(signal.SIGINT)
        profile.wait()
    applied = before + count - first
    rate = applied / (finished - started)
    label = "ingest_mix" if mix else "ingest_direct" if processes_count is None else f"ingest_direct_{n}"
    label += "_pure" if pure else ""
    bench.results[label] = {"transactions": count, "measured": applied,
                            "seconds": round(finished - started, 2), "tx_per_s": round(rate),
                            "wal_bytes_per_tx": round(wal / count), "projectors": n, "compiled": not pure,
                            "cpu": cpu}
    if mix:
        if "ingest_direct" in bench.results:
            bench.results[label]["ratio_to_transfers"] = round(rate / bench.results["ingest_direct"]["tx_per_s"], 2)
        decided = await owner.fetch("SELECT kind, status, count(*) AS n FROM transactions"
                                    " WHERE kind IN ('hold', 'capture') GROUP BY 1, 2 ORDER BY 1, 2")
        bench.results[label]["decided"] = {f"{r['kind']} {r['status']}": r["n"] for r in decided}
    say(f"{label} (straight to Kafka, {n} projector process(es)): {rate:.0f} decided requests/s "
        f"over {applied}, "
        f"{wal / count:.0f} WAL bytes per request; {tools.cpu_text(cpu)}")
    statements = await owner.fetch(
        "SELECT calls, total_exec_time, query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
        "WHERE r.rolname = 'ledger_projector' ORDER BY total_exec_time DESC LIMIT 12")
    bench.results[label]["projector_statements"] = [
        {"query": " ".join(r["query"].split())[:90], "calls": r["calls"], "ms": round(r["total_exec_time"])}
        for r in statements]
    for r in bench.results[label]["projector_statements"][:8]:
        say(f"  SQL {r['ms']:>6} ms {r['calls']:>6} calls  {r['query']}")
    if processes_count is not None:
        if "ceiling" in bench.results:
            bench.results[label]["ratio"] = round(rate / bench.results["ceiling"]["tx_per_s"], 2)
            say(f"  {n} projector processes reach {bench.results[label]['ratio']}x the ceiling measured above")
        bench.stop_projectors()
        bench.spawn_projectors()
    elif not mix:
        bench.results[label]["wal_by_record"] = await ceiling.wal_by_record(owner, lsn_before, count)
        for row in bench.results[label]["wal_by_record"]:
            say(f"  WAL {row['kind']}: {row['per_tx']} per tx, {row['bytes_per_tx']} bytes/tx "
                f"({row['fpi_bytes_per_tx']} of them full pages)")
        top = await ceiling.measure(owner, since)
        top["ratio"] = round(rate / top["tx_per_s"], 2)
        bench.results["ceiling"] = top
        say(f"PostgreSQL's ceiling for the same rows: {top['tx_per_s']} tx/s ({top['wal_bytes_per_tx']} WAL "
            f"bytes/tx; {tools.cpu_text(top['cpu'])}); the projector reaches {top['ratio']}x")


def transfer(n: int) -> list[Posting]:
    """A deposit to one of 5,000 accounts and a payment from it to one of 997 others."""
    return [Posting("@world", f"ingest-{n % 5000}", 100, "USD/2"),
            Posting(f"ingest-{n % 5000}", f"acct-{n % 997 + 1}", 40, "USD/2")]


def _held(n: int) -> list[Posting]:
    """A hold of two postings from the outside world, like `transfer`'s two (and always fundable)."""
    return [Posting("@world", f"ingest-{n % 5000}", 100, "USD/2"), Posting("@world", f"acct-{n % 997 + 1}", 40,
                                                                          "USD/2")]


def _profile(pid: int, label: str) -> subprocess.Popen[bytes] | None:
    """With LEDGER_BENCH_PROFILE=1, py-spy samples `pid` until stopped: collapsed stacks in bench/results."""
    if os.environ.get("LEDGER_BENCH_PROFILE") != "1":
        return None
    out = RESULTS / f"profile-{label}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-r", "250",
                             "-f", "raw", "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL)
