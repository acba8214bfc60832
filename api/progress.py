"""How far the projection has applied the log, pushed by the projector's NOTIFY after each batch.

Waiters for `wait=true` and `min_position` park on a future per position and wake when a notification
moves their partition past it: no polling of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from infra.settings import KEYS_CHANNEL, PROGRESS_CHANNEL
from ledger.errors import Unavailable
from ledger.positions import Position

log = logging.getLogger("ledger.api")

WAITERS_MAX = 20_000
WATCH_INTERVAL_S = 0.25


class Progress:
    """The next offset to apply, per partition, and the requests waiting for it."""

    def __init__(self) -> None:
        self.applied: dict[int, int] = {}
        self._waiters: dict[int, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._count = 0
        self._seq = itertools.count()

    def reached(self, position: Position) -> bool:
        return self.applied.get(position.partition, 0) > position.offset

    def advance(self, offsets: dict[int, int]) -> None:
        for partition, next_offset in offsets.items():
            if next_offset <= self.applied.get(partition, 0):
                continue
            self.applied[partition] = next_offset
            heap = self._waiters.get(partition, [])
            while heap and heap[0][0] < next_offset:
                _, _, future = heapq.heappop(heap)
                self._count -= 1
                if not future.done():
                    future.set_result(None)

    async def wait(self, position: Position, timeout_s: float) -> bool:
        """True once `position` is applied, False if `timeout_s` passed first."""
        if self.reached(position):
            return True
        if self._count >= WAITERS_MAX:
            raise Unavailable("too many requests are waiting for the projection; retry later")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters.setdefault(position.partition, []),
                       (position.offset, next(self._seq), future))
        self._count += 1
        try:
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return self.reached(position)


class Listener:
    """One connection LISTENing for progress and key changes; reconnects and resyncs when it drops."""

    def __init__(self, url: str, progress: Progress,
                 on_keys: Callable[[str | None], Awaitable[None]]) -> None:
        self.url = url
        self.progress = progress
        self.on_keys = on_keys
        self.conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.conn is not None:
            await self.conn.close(timeout=2)

    @property
    def healthy(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=5)
        await conn.add_listener(PROGRESS_CHANNEL, self._on_progress)
        await conn.add_listener(KEYS_CHANNEL, self._on_key)
        # Listen first, then read: a batch committed in between is seen by one or the other.
        rows = await conn.fetch("SELECT log_partition, next_offset FROM api_offsets()")
        self.progress.advance({r["log_partition"]: r["next_offset"] for r in rows})
        await self.on_keys(None)
        self.conn = conn

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if self.healthy:
                continue
            self.conn = None
            try:
                await self._connect()
                log.info("notification listener reconnected")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("notification listener cannot reconnect yet: %s", e)

    def _on_progress(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.progress.advance({int(p): int(o) for p, o in orjson.loads(payload).items()})

    def _on_key(self, conn: object, pid: int, channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(self.on_keys(payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
