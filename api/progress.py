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
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from api import tally
from api.cache import BalanceCache
from infra.settings import KEYS_CHANNEL, PROGRESS_CHANNEL
from ledger import changes
from ledger.errors import LedgerError, Unavailable
from ledger.positions import Position, PositionKey

log = logging.getLogger("ledger.api")

WATCH_INTERVAL_S = 0.25
# Pinged four times a second when nothing else is heard: the balance cache serves only while the connection
# has answered (a ping, or a notification) within `CACHE_FRESH_S`.
HEARTBEAT_INTERVAL_S = 0.25
CACHE_FRESH_S = 0.5
HEARTBEAT_TIMEOUT_S = 1.5
# A ping is answered in milliseconds; two seconds of silence is a connection in trouble.
HEARTBEAT_STALE_S = 2.0
CONNECT_TIMEOUT_S = 5.0
# The whole of a (re)connection: connect, LISTEN, read the offsets and reload the keys. Every step talks to a
# server that may stop answering mid-failover; one unbounded step left an API unready for good (make soak-cluster).
RECONNECT_TIMEOUT_S = 15.0
LISTENER_APPLICATION = "ledger-api-listener"


class TooManyWaiting(LedgerError):
    """One tenant or key already has its share of waiting requests; the others are not affected."""

    code = "too_many_waiting"


@dataclass(slots=True)
class WaitLimits:
    """How many requests may wait at once: in all, per tenant, per API key."""

    total_max: int = 20_000
    tenant_max: int = 2_000
    key_max: int = 1_000
    # Past `total_max`, a tenant with fewer waiters than this is still admitted (up to twice `total_max` in
    # all): a few tenants' floods cannot take every place from the others.
    tenant_reserved: int = 20


@dataclass(order=True, slots=True)
class _Waiter:
    offset: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)
    queued: bool = field(default=True, compare=False)  # still in its partition's heap
    left: bool = field(default=False, compare=False)  # its `wait` has returned
    answer: dict[str, Any] | None = field(default=None, compare=False)  # the projector's, for `decided`
    expect: str | None = field(default=None, compare=False)  # the id of the request whose answer it takes


class Progress:
    """The next offset to apply, per partition, and the requests waiting for it.

    Every waiter holds a place in three counts (total, its tenant's, its key's) until it returns, however
    it returns: woken, timed out or cancelled. A waiter that leaves before it is woken stays in its heap,
    marked, until the heap is compacted (when such entries are half of it), so no heap outgrows twice its
    live waiters.
    """

    def __init__(self, limits: WaitLimits | None = None, positions: PositionKey | None = None) -> None:
        self.limits = limits or WaitLimits()
        self.positions = positions  # opens the projector's sealed answers (none taken without it)
        self.applied: dict[int, int] = {}
        self._heaps: dict[int, list[_Waiter]] = {}
        self._gone: dict[int, int] = {}  # per partition: heap entries whose waiter left
        self._count = 0
        self._by_tenant: dict[str, int] = {}
        self._by_key: dict[str, int] = {}
        self._seq = itertools.count()
        # The waiters of `decided`, by the position whose answer they take (one request each).
        self._answering: dict[tuple[int, int], _Waiter] = {}

    @property
    def waiting(self) -> int:
        return self._count

    def heap_size(self, partition: int) -> int:
        return len(self._heaps.get(partition, ()))

    def reached(self, position: Position) -> bool:
        return self.applied.get(position.partition, 0) > position.offset

    def advance(self, offsets: dict[int, int]) -> None:
        for partition, next_offset in offsets.items():
            if next_offset <= self.applied.get(partition, 0):
                continue
            self.applied[partition] = next_offset
            heap = self._heaps.get(partition, [])
            while heap and heap[0].offset < next_offset:
                waiter = heapq.heappop(heap)
                waiter.queued = False
                if waiter.left:
                    self._gone[partition] -= 1
                elif not waiter.future.done():
                    waiter.future.set_result(None)

    def deliver(self, answers: list[tuple[int, int, str]]) -> None:
        """The projector's answers to waited transfers (before the offsets that wake their waiters), each sealed
        to its position: kept for the request of this process that waits at that position, if one does and the
        answer opens under the position key and names that request's id; else dropped (no role that can
        NOTIFY on the channel can make one, and a position guessed after a retried append, which may be
        another request's, is not answered with that request's). None is taken once its waiter is woken."""
        if self.positions is None:
            return
        for partition, offset, sealed in answers:
            waiter = self._answering.get((partition, offset))
            if waiter is None or waiter.answer is not None or waiter.future.done():
                continue
            opened = self.positions.open_answer(Position(partition, offset), sealed)
            if opened is None:
                continue
            try:
                answer = orjson.loads(opened)
            except orjson.JSONDecodeError:
                continue
            if isinstance(answer, dict) and answer.get("id") == waiter.expect:
                waiter.answer = answer

    async def wait(self, position: Position, timeout_s: float, tenant: str, key: str) -> bool:
        """True once `position` is applied, False if `timeout_s` passed first. `TooManyWaiting` when
        `tenant` or `key` has its share waiting already, `Unavailable` when every place is taken."""
        return (await self._wait(position, timeout_s, tenant, key, None))[0]

    async def decided(self, position: Position, timeout_s: float, tenant: str, key: str,
                      id: str) -> tuple[bool, dict[str, Any] | None]:
        """`wait` for the request `id` appended at `position`, and its answer as the projector sent it (None when
        it sent none: the request was not a waited transfer's, its answer did not fit, or it was applied before
        this began waiting; or when what came is not this request's answer)."""
        return await self._wait(position, timeout_s, tenant, key, id)

    async def _wait(self, position: Position, timeout_s: float, tenant: str, key: str,
                    expect: str | None) -> tuple[bool, dict[str, Any] | None]:
        if self.reached(position):
            return True, None
        self._admit(tenant, key)
        waiter = _Waiter(position.offset, next(self._seq), asyncio.get_running_loop().create_future())
        heapq.heappush(self._heaps.setdefault(position.partition, []), waiter)
        at = (position.partition, position.offset)
        if expect is not None:
            waiter.expect = expect
            self._answering[at] = waiter
        try:
            await asyncio.wait_for(waiter.future, timeout_s)
            return True, waiter.answer
        except TimeoutError:
            return self.reached(position), waiter.answer
        finally:
            if expect is not None and self._answering.get(at) is waiter:
                del self._answering[at]
            self._leave(position.partition, waiter, tenant, key)

    def _admit(self, tenant: str, key: str) -> None:
        if self._by_key.get(key, 0) >= self.limits.key_max:
            raise TooManyWaiting(f"this API key already has {self.limits.key_max} requests waiting; retry later")
        if self._by_tenant.get(tenant, 0) >= self.limits.tenant_max:
            raise TooManyWaiting(f"this tenant already has {self.limits.tenant_max} requests waiting; retry later")
        if self._count >= self.limits.total_max and (self._by_tenant.get(tenant, 0) >= self.limits.tenant_reserved
                                                     or self._count >= 2 * self.limits.total_max):
            raise Unavailable("too many requests are waiting for the projection; retry later")
        self._count += 1
        tally.enter(self._by_tenant, tenant)
        tally.enter(self._by_key, key)

    def _leave(self, partition: int, waiter: _Waiter, tenant: str, key: str) -> None:
        self._count -= 1
        tally.leave(self._by_tenant, tenant)
        tally.leave(self._by_key, key)
        waiter.left = True
        if not waiter.queued:
            return
        self._gone[partition] = self._gone.get(partition, 0) + 1
        heap = self._heaps[partition]
        if self._gone[partition] * 2 > len(heap):
            for w in heap:
                w.queued = not w.left
            live = [w for w in heap if w.queued]
            heapq.heapify(live)
            self._heaps[partition] = live
            self._gone[partition] = 0


class Listener:
    """One connection LISTENing for progress and key changes; reconnects and resyncs when it drops.

    A connection can also die without closing (a half-open TCP connection, a stuck backend): LISTEN then
    simply hears nothing, and revocations and progress stop silently. So the connection is pinged every
    `HEARTBEAT_INTERVAL_S`; a ping not answered within `HEARTBEAT_TIMEOUT_S` terminates it and reconnects,
    and while no ping has succeeded for `HEARTBEAT_STALE_S` the listener reports itself unhealthy.
    """

    def __init__(self, url: str, progress: Progress, on_keys: Callable[[str | None], Awaitable[None]],
                 cache: BalanceCache | None = None) -> None:
        self.url = url
        self.progress = progress
        self.on_keys = on_keys
        self.cache = cache if cache is not None else BalanceCache(0, lambda: False)
        self.conn: asyncpg.Connection | None = None
        self.problem = "not connected yet"
        self._last_ok = 0.0
        self._confirmed = False  # a ping has succeeded on this connection (or it is the first one)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._connect()
        self._confirmed = True
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
        return self.status() is None

    def fresh(self) -> bool:
        """Whether this connection has been heard from within `CACHE_FRESH_S`: then every batch committed
        more than that ago has had its notification delivered (PostgreSQL sends them to an idle listening
        backend at once, and before the answer to any later ping)."""
        conn = self.conn
        return (conn is not None and self._confirmed and time.monotonic() - self._last_ok < CACHE_FRESH_S
                and not conn.is_closed())

    def status(self) -> str | None:
        """None when notifications flow, else why they may not."""
        if self.conn is None or self.conn.is_closed() or not self._confirmed:
            return self.problem
        silent_s = time.monotonic() - self._last_ok
        if silent_s > HEARTBEAT_STALE_S:
            return f"the listening connection has not answered a ping for {silent_s:.1f} s"
        return None

    async def _connect(self) -> None:
        async with asyncio.timeout(RECONNECT_TIMEOUT_S):
            await self._connect_unbounded()

    async def _connect_unbounded(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S,
                                     server_settings={"application_name": application_name()})
        try:
            await conn.add_listener(PROGRESS_CHANNEL, self._on_progress)
            await conn.add_listener(KEYS_CHANNEL, self._on_key)
            # Listen first, then read: a batch committed in between is seen by one or the other.
            rows = await conn.fetch("SELECT log_partition, next_offset FROM api_offsets()", timeout=HEARTBEAT_TIMEOUT_S)
            # Notifications were not heard before now: what the cache holds, and reads in flight, may be stale.
            self.cache.drop_all()
            self.progress.advance({r["log_partition"]: r["next_offset"] for r in rows})
            await self.on_keys(None)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        self._last_ok = time.monotonic()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self._watch_once()
            except Exception as e:
                # This task is the listener's only way back: whatever one round met (make soak-cluster saw an
                # API stay unready after a failover, its watcher gone without a word), it drops the connection,
                # says so, and goes on.
                log.error("notification listener: unexpected %s; reconnecting", type(e).__name__, exc_info=e)
                self.problem = f"the listening connection failed ({type(e).__name__}); reconnecting"
                if self.conn is not None:
                    self.conn.terminate()
                self.conn = None

    async def _watch_once(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            # A new connection is pinged at once, however busy: notifications refresh `_last_ok`, and under a
            # steady stream of them a "ping when quiet" never came, so it stayed unconfirmed (and the API
            # unready) for as long as writes flowed (found by `make soak-cluster`).
            if not self._confirmed or time.monotonic() - self._last_ok >= HEARTBEAT_INTERVAL_S:
                await self._ping(self.conn)
            return
        await self._reconnect()

    async def _ping(self, conn: asyncpg.Connection) -> None:
        try:
            await conn.fetchval("SELECT 1", timeout=HEARTBEAT_TIMEOUT_S)
            self._last_ok = time.monotonic()
            self._confirmed = True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            self.problem = f"the listening connection failed a ping ({type(e).__name__}); reconnecting"
            log.warning("notification listener: ping failed (%s); terminating the connection", type(e).__name__)
            conn.terminate()
            self.conn = None

    async def _reconnect(self) -> None:
        self.conn = None
        self.problem = "the listening connection was lost; reconnecting"
        try:
            await self._connect()
            # Healthy again once a ping has gone through the new connection too.
            self._confirmed = False
            self.problem = "reconnected; waiting for the new connection to answer a ping"
            log.info("notification listener reconnected")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, Unavailable) as e:
            self.problem = f"cannot reconnect the listening connection yet: {type(e).__name__}"
            log.warning("notification listener cannot reconnect yet: %s", e)

    def _on_progress(self, conn: object, pid: int, channel: str, payload: str) -> None:
        if conn is self.conn:
            self._last_ok = time.monotonic()
        try:
            notified = changes.parse(payload)
        except ValueError:  # orjson's JSONDecodeError and binascii.Error are ValueErrors
            log.error("progress notification not understood; dropping the balance cache: %.200r", payload)
            self.cache.drop_all()
            return
        # The accounts first: a waiter woken by the advance may read from the cache at once.
        if notified.reset:
            self.cache.drop_all()
        self.cache.changed(notified.changed)
        if notified.answers:
            self.progress.deliver(notified.answers)
        if notified.offsets:
            self.progress.advance(notified.offsets)

    def _on_key(self, conn: object, pid: int, channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(self._key_changed(payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _key_changed(self, payload: str) -> None:
        try:
            async with asyncio.timeout(RECONNECT_TIMEOUT_S):
                await self.on_keys(payload)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, LedgerError) as e:
            # Not lost: the listener's next reconnection reloads every key and tenant.
            log.warning("key change %.100r not applied (%s); dropping the connection to reload all", payload,
                        type(e).__name__)
            if self.conn is not None:
                self.conn.terminate()


def application_name() -> str:
    """How the listening connection shows in `pg_stat_activity`: operators (and the heartbeat test) find
    its backend by this name, one per API process."""
    return f"{LISTENER_APPLICATION}:{os.getpid()}"
