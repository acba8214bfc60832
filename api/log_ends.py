"""Where the log ends, per partition, known without a Kafka round trip per request.

A `min_position` beyond the end of the log can never be reached, so it is refused at once (422) rather than
parked as a waiter. The ends are cached: the API's own appends move them forward (an append's offset is below
the end), and only a position beyond the cached end asks Kafka, through one shared refresh at a time,
at most one every `REFRESH_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from ledger.errors import Unavailable
from ledger.positions import Position

# Caps the Kafka round trips a flood of positions beyond the end can cause at 10 a second.
REFRESH_INTERVAL_S = 0.1


class LogEnds:
    """The next offset of each partition, as last seen; never moves backwards."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[int, int] | None]],
                 refresh_interval_s: float = REFRESH_INTERVAL_S) -> None:
        self.ends: dict[int, int] = {}
        self.fetches = 0
        self._fetch = fetch
        self._interval_s = refresh_interval_s
        self._next: asyncio.Task[None] | None = None  # the refresh that has not asked Kafka yet
        self._last_fetch_at = float("-inf")

    def advance(self, position: Position) -> None:
        """`position` was appended: the log ends past it."""
        self.update({position.partition: position.offset + 1})

    def update(self, ends: dict[int, int]) -> None:
        for partition, end in ends.items():
            if end > self.ends.get(partition, 0):
                self.ends[partition] = end

    async def beyond(self, position: Position) -> bool:
        """True if `position` is past the end of the log (or on a partition it does not have), checked
        against Kafka when the cache says so; `Unavailable` if Kafka cannot tell."""
        if self._within(position):
            return False
        await self._refresh()
        return not self._within(position)

    def _within(self, position: Position) -> bool:
        return position.offset < self.ends.get(position.partition, 0)

    async def _refresh(self) -> None:
        # Join the refresh that has not asked Kafka yet, so the answer is never older than the question.
        if self._next is None:
            self._next = asyncio.create_task(self._fetch_later())
            # Every waiter may have gone (client disconnects): the outcome is still retrieved, never logged.
            self._next.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(self._next)

    async def _fetch_later(self) -> None:
        delay_s = self._last_fetch_at + self._interval_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self._next = None
        self._last_fetch_at = time.monotonic()
        self.fetches += 1
        ends = await self._fetch()
        if ends is None:
            raise Unavailable("the log (Kafka) cannot tell where it ends; retry later")
        self.update(ends)
