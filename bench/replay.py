"""A replay of the whole log into an empty database (`make bench`, step `replay`)."""

from __future__ import annotations

import secrets
import time

import asyncpg

from bench.stack import Bench
from infra.migrate import migrate
from projections.replay import replay
from tools.local import say


async def replay_rate(bench: Bench) -> None:
    url = bench.db_url.rsplit("/", 1)[0] + f"/ledger_bench_replay_{secrets.token_hex(4)}"
    await migrate(url)
    try:
        started = time.monotonic()
        stats = await replay(lambda: asyncpg.connect(url), bench.bootstrap, bench.topic, "proj_v1")
        seconds = time.monotonic() - started
    finally:
        admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
        await admin.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}"')
        await admin.close()
    bench.results["replay"] = {"events": stats.records, "seconds": round(seconds, 2),
                               "events_per_s": round(stats.records / seconds)}
    say(f"replay: {stats.records} events in {seconds:.1f} s = {stats.records / seconds:.0f} events/s")
