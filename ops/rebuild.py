"""`ledger replay`: rebuild the projections from the log into a shadow schema, then switch atomically.

The live projection keeps serving throughout. The switch holds the projector's advisory lock exclusively
while the shadow applies the last few records, then repoints the API's functions in one transaction: no
read fails, and no batch is written to the old schema after the switch.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from infra.settings import PROGRESS_CHANNEL
from ledger.changes import reset_payload
from ledger.errors import Unavailable
from projections.replay import ReplayStats, replay
from projections.writer import committed_offsets

CATCH_UP_ROUNDS_MAX = 20
REPLAY_LOCK = 7215830  # one replay at a time (session lock, released when the connection closes)
SWITCH_LAG_MAX = 5000


@dataclass(frozen=True, slots=True)
class Rebuilt:
    schema: str
    records: int
    seconds: float
    switched: bool


class ProgressBar:
    """One line on stderr: percentage, events/s and ETA."""

    def __init__(self, stream: object = sys.stderr) -> None:
        self.started = time.monotonic()
        self.stream = stream
        self.last = 0.0

    def __call__(self, current: dict[int, int], end: dict[int, int], stats: ReplayStats) -> None:
        now = time.monotonic()
        if now - self.last < 0.5:
            return
        self.last = now
        done, total = sum(current.values()), sum(end.values())
        rate = stats.records / max(now - self.started, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * done / total) if total else width
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:,.0f} events/s ETA {eta:,.0f} s ",
              end="", file=self.stream, flush=True)  # type: ignore[call-overload]


async def _shadow(conn: asyncpg.Connection) -> str:
    """The unfinished shadow schema, or a new one."""
    existing = await conn.fetchval("SELECT shadow_schema FROM ledger_meta")
    if existing:
        return str(existing)
    schema = "proj_" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    async with conn.transaction():
        await conn.execute("SELECT ledger_create_projection($1)", schema)
        await conn.execute("UPDATE ledger_meta SET shadow_schema = $1", schema)
    return schema


async def _live_offsets(conn: asyncpg.Connection) -> dict[int, int]:
    """How far the live projection has applied each partition (a partition it has not seen: not at all)."""
    return await committed_offsets(conn, await conn.fetchval("SELECT active_schema FROM ledger_meta"))


async def _switch(url: str, bootstrap: str, topic: str, schema: str, conn: asyncpg.Connection) -> int:
    """Apply the last records to the shadow while the projector is held off, then activate it."""
    locker = await asyncpg.connect(url)
    try:
        async with locker.transaction():
            await locker.execute("SELECT pg_advisory_xact_lock(ledger_switch_lock())")
            target = await _live_offsets(locker)
            # The shadow is never past the live projection (see `rebuild`): it applies the last records up to
            # it, so the projector resumes where both stand once the shadow is live.
            stats = await replay(lambda: asyncpg.connect(url), bootstrap, topic, schema, until=target)
            await locker.execute("SELECT ledger_activate_projection($1)", schema)
            # The API's balance caches were kept by the old projection's notifications: dropped, at the commit.
            await locker.execute("SELECT pg_notify($1, $2)", PROGRESS_CHANNEL, reset_payload())
        return stats.records
    finally:
        await locker.close()


async def _drop_older(conn: asyncpg.Connection, keep: set[str]) -> None:
    """Drop projection schemas older than the one just replaced (kept for a rollback by hand)."""
    for row in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'proj\\_%'"):
        if row["nspname"] not in keep:
            await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')


async def rebuild(url: str, bootstrap: str, topic: str, until: dict[int, int] | None = None,
                  until_time: datetime | None = None, show_progress: bool = True) -> Rebuilt:
    """Replay the whole log into a shadow schema (resuming one left unfinished) and switch to it, unless
    `until`/`until_time` stop it early, in which case the shadow is left for inspection."""
    conn = await asyncpg.connect(url)
    started = time.monotonic()
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", REPLAY_LOCK):
            raise Unavailable("another `ledger replay` is running")
        schema = await _shadow(conn)
        bar = ProgressBar() if show_progress else None
        # Never past the live projection: a record the shadow applied and the live projector had not would
        # get no outcome on the outcomes topic and no notification (the projector resumes past it once the
        # shadow is live). The live projection's offsets move on meanwhile; the rounds below follow it.
        bound = until if until is not None or until_time is not None else await _live_offsets(conn)
        stats = await replay(lambda: asyncpg.connect(url), bootstrap, topic, schema, until=bound,
                             until_time=until_time, progress=bar)
        records = stats.records
        if until is not None or until_time is not None:
            return Rebuilt(schema, records, time.monotonic() - started, False)
        for _ in range(CATCH_UP_ROUNDS_MAX):
            target = await _live_offsets(conn)
            mine = await committed_offsets(conn, schema)
            behind = sum(max(0, o - mine.get(p, 0)) for p, o in target.items())
            if behind <= SWITCH_LAG_MAX:
                break
            records += (await replay(lambda: asyncpg.connect(url), bootstrap, topic, schema, until=target)).records
        previous = await conn.fetchval("SELECT active_schema FROM ledger_meta")
        records += await _switch(url, bootstrap, topic, schema, conn)
        await _drop_older(conn, keep={schema, previous})
        return Rebuilt(schema, records, time.monotonic() - started, True)
    finally:
        await conn.close()

