"""`make bench` / `make bench-quick`: the stack as `make run` starts it, measured end to end.

Prints a table, saves JSON and a PNG plot under `bench/results/`. Uses its own database (`ledger_bench`)
and consumer group; the scale data is generated inside PostgreSQL, not appended to the log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench import data, tools
from bench.batches import batches_vs_singles
from bench.fairness import fairness
from bench.formance import formance
from bench.growth import growth
from bench.history import DEEP, history
from bench.ingest import ingest_direct
from bench.ingest_client import ingest_client
from bench.ingest_http import ingest_https
from bench.isolation import isolation
from bench.matrix import matrix
from bench.postmortem import postmortem
from bench.queries import queries
from bench.reads import large, reads, reads_held
from bench.replay import replay_rate
from bench.report import plot, report
from bench.round_trips import round_trips
from bench.saturation import saturation
from bench.stack import RESULTS, Bench
from bench.waited import waited
from bench.webhooks import webhooks
from tools import local
from tools.local import say
from tools.testing import remove_world


async def run(bench: Bench) -> None:
    owner = await asyncpg.connect(bench.db_url)
    await owner.execute("SELECT ledger_use_live()")  # loads and counts go to the live projection
    try:
        await bench.tenants()
        await bench.caught_up(owner)
        if bench.only == {"fairness"}:  # needs none of the scale data
            await fairness(bench)
            return
        if bench.only == {"webhooks"}:
            await webhooks(bench)
            return
        if bench.only == {"waited"}:  # a fresh database: the cost of a write before any scale data
            waited(bench)
            return
        if bench.only == {"growth"}:  # its own data, from a fresh database
            await growth(bench, owner)
            return
        if bench.only is not None and bench.only <= {"matrix", "formance"}:  # neither needs the scale data
            if "matrix" in bench.only:
                await matrix(bench, owner)
            if "formance" in bench.only:
                await formance(bench)
            return
        small = 10_000
        say(f"loading {small} accounts x 10 entries and one history of {DEEP}")
        await data.load_accounts(owner, 1, small, 10)
        await data.load_deep_history(owner, DEEP)
        await data.settle(owner)
        rates = [500, 2000] if bench.quick else [500, 1000, 2000, 5000]
        count = 20_000 if bench.quick else 100_000
        steps: list[tuple[str, Callable[[], Awaitable[None] | None]]] = [
            ("reads", lambda: reads(bench, small, "reads_10k", rates)),
            ("saturation", lambda: saturation(bench, small)),
            ("round_trips", lambda: round_trips(bench, owner, small)),
            ("history", lambda: history(bench)),
            ("ingest", lambda: ingest_direct(bench, owner, count)),
            ("ingest2", lambda: ingest_direct(bench, owner, count, processes_count=2)),
            ("pure", lambda: ingest_direct(bench, owner, count, processes_count=1, pure=True)),
            ("mix", lambda: ingest_direct(bench, owner, count, mix=True)),
            ("held", lambda: reads_held(bench, owner, small)),
            ("client", lambda: ingest_client(bench, 500)),
            ("http", lambda: ingest_https(bench, [500] if bench.quick else [100, 500])),
            ("waited", lambda: waited(bench)),
            ("matrix", lambda: matrix(bench, owner)),
            ("formance", lambda: formance(bench)),  # only when asked for (make bench-formance): it builds a peer
            ("replay", lambda: replay_rate(bench)),
            ("isolation", lambda: isolation(bench)),
            ("fairness", lambda: fairness(bench)),
            ("webhooks", lambda: webhooks(bench)),
            ("batches", lambda: batches_vs_singles(bench)),
            ("queries", lambda: queries(bench, owner)),
            ("postmortem", lambda: postmortem(bench, owner)),
            ("large", lambda: large(bench, owner, small)),
        ]
        for name, step in steps:
            if bench.only is not None and name not in bench.only:
                continue
            if (name == "large" and bench.quick) or (name == "formance" and bench.only is None):
                continue
            done = step()
            if done is not None:
                await done
    finally:
        await owner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a reduced run, under 3 minutes")
    parser.add_argument("--only", help="comma-separated steps to run (reads, saturation, round_trips, history, "
                        "ingest, mix, held, client, http, replay, isolation, batches, queries, large)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tools.vegeta()
    tools.wrk()
    started_pg, started_kafka = local.up()
    bench = Bench(args.quick, set(args.only.split(",")) if args.only else None)
    began = time.monotonic()
    try:
        bench.start()
        asyncio.run(run(bench))
    finally:
        bench.stop()
        asyncio.run(remove_world(bench.cfg))
        local.stop_started(started_pg, started_kafka)
    bench.results["total_seconds"] = round(time.monotonic() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(bench.results, indent=2, default=str))
    plotted = plot(bench.results, RESULTS / f"{stamp}.png")
    print(report(bench.results))
    print(f"\nresults: {RESULTS / f'{stamp}.json'}" + (f" and {stamp}.png" if plotted else ""))


if __name__ == "__main__":
    main()
