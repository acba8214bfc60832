"""Folding batch N+1 while batch N is written: Python's work and PostgreSQL's run side by side.

The fold of batch N+1 needs the state batch N leaves, before N commits. So the state is carried in memory
from batch to batch (one `Ledger`): every balance, id and idempotency key an uncommitted batch touched is in
it, and whatever it lacks is read from PostgreSQL's committed state on a second connection while the first
writes N. Hot accounts are then read from PostgreSQL once, not once a batch.

Carried state is right while this process is the only writer of its partitions (a tenant lives on one
partition). Every write checks that under the offsets row lock: each partition must stand where this process
left it. If not (another worker applied records in between, or an operator switched the projection), the
carried state is dropped and the batches not yet written are applied the plain way (`apply_batch`, which
reads everything inside its own transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from ledger.decisions import Ledger
from ledger.errors import InvalidRequest
from ledger.requests import TransactionRequest
from projections.batches import BatchRows, Record, decode_all, fold_batch
from projections.writer import (
    BatchResult,
    Publish,
    apply_batch,
    begin,
    committed_offsets,
    fresh_records,
    open_batch,
    preload,
    store,
)

log = logging.getLogger("ledger.projector")

# Past this many carried balances, ids and keys, the state is dropped (once no write is in flight).
CARRIED_KEYS_MAX = 500_000
RECONNECT_BACKOFF_S_MAX = 2.0
# Decode and fold in slices, yielding to the event loop between them: the write in flight streams its COPY
# only when this coroutine lets it run, and PostgreSQL idles while it does not.
SLICE_RECORDS = 500

Connect = Callable[[], Awaitable[asyncpg.Connection]]
T = TypeVar("T")


class Stale(Exception):
    """A partition is not where this process left it: the carried state cannot be trusted."""


@dataclass(slots=True)
class Prepared:
    """A folded batch, waiting for its write: `base` is where its partitions stood when it was folded."""

    records: list[Record]
    rows: BatchRows
    base: dict[int, int]
    fresh: int
    folded_s: float


async def write(conn: asyncpg.Connection, batch: Prepared, publish: Publish | None,
                schema: str | None = None) -> BatchResult:
    """Write a folded batch in one transaction with its offsets, if its partitions stand at `batch.base`."""
    started = time.perf_counter()
    rows = batch.rows
    after = batch.base | rows.next_offsets
    async with conn.transaction():
        standing = await open_batch(conn, sorted(batch.base), schema)
        if standing == after:  # an earlier attempt committed; its acknowledgement was lost
            return BatchResult([], {}, 0, len(batch.records), time.perf_counter() - started, standing)
        if standing != batch.base:
            raise Stale(f"partitions stand at {standing}, folded at {batch.base}")
        await store(conn, rows, publish, notify=schema is None)
    return BatchResult(rows.outcomes, rows.counts, batch.fresh, len(batch.records) - batch.fresh,
                       batch.folded_s + time.perf_counter() - started, after)


class Pipeline:
    """One batch folding while the previous one is written; `submit` and `drain` return finished writes.

    Database calls go through `_retrying`: a failure in `transient` reopens the connection and retries
    (bounded); anything else propagates, and the projector exits for a clean restart. Writes go to the live
    projection, or to `schema` (tests, rebuilds).
    """

    def __init__(self, connect: Connect, publish: Publish | None, retry_attempts_max: int,
                 transient: tuple[type[BaseException], ...], schema: str | None = None) -> None:
        self.connect = connect
        self.schema = schema  # None: the live projection
        self.publish = publish
        self.retry_attempts_max = retry_attempts_max
        self.transient = transient
        self.connections: dict[str, asyncpg.Connection | None] = {"reader": None, "writer": None}
        self.ledger = Ledger()
        self.expected: dict[int, int] = {}
        self.in_flight: tuple[Prepared, asyncio.Task[BatchResult]] | None = None
        self.reset_wanted = False  # set on a rebalance: drop the carried state at the next batch

    async def submit(self, records: list[Record]) -> list[BatchResult]:
        """Fold `records` while the previous batch is written, then start writing them."""
        done: list[BatchResult] = []
        if self.reset_wanted or self._carried() > CARRIED_KEYS_MAX:
            done = await self.drain()
            self._reset()
        batch = await self._retrying("reader", lambda conn: self._prepare(conn, records))
        finished, redone = await self._finish_in_flight(pending=batch)
        done += finished
        if redone:
            return done
        if not batch.fresh:  # every record was applied before: nothing to write
            return [*done, BatchResult([], {}, 0, len(records), batch.folded_s, batch.base)]
        task = asyncio.create_task(self._retrying("writer", lambda conn: write(conn, batch, self.publish, self.schema)))
        self.in_flight = (batch, task)
        return done

    async def drain(self) -> list[BatchResult]:
        """Wait for the write in flight; afterwards PostgreSQL holds everything submitted."""
        finished, _ = await self._finish_in_flight(pending=None)
        return finished

    async def close(self) -> None:
        if self.in_flight is not None:
            self.in_flight[1].cancel()
            self.in_flight = None
        for name, conn in self.connections.items():
            if conn is not None:
                conn.terminate()
                self.connections[name] = None

    # --- internals ------------------------------------------------------------------------------------

    def _carried(self) -> int:
        return len(self.ledger.balances) + len(self.ledger.by_id) + len(self.ledger.by_key)

    def _reset(self) -> None:
        assert self.in_flight is None
        self.ledger = Ledger()
        self.expected = {}
        self.reset_wanted = False

    async def _prepare(self, conn: asyncpg.Connection, records: list[Record]) -> Prepared:
        started = time.perf_counter()
        partitions = {r.partition for r in records}
        if not partitions <= self.expected.keys():
            async with conn.transaction(readonly=True):
                known = await committed_offsets(conn, await begin(conn, self.schema))
            self.expected.update({p: known.get(p, 0) for p in partitions - self.expected.keys()})
        base = {p: self.expected[p] for p in partitions}
        fresh = fresh_records(records, base)
        decoded: list[TransactionRequest | InvalidRequest] = []
        for i in range(0, len(fresh), SLICE_RECORDS):
            decoded += decode_all(fresh[i:i + SLICE_RECORDS])
            await asyncio.sleep(0)
        requests = [d for d in decoded if not isinstance(d, InvalidRequest)]
        if requests:
            async with conn.transaction(readonly=True):
                await begin(conn, self.schema)
                await preload(conn, requests, self.ledger)
        rows = BatchRows()
        for i in range(0, len(fresh), SLICE_RECORDS):
            fold_batch(self.ledger, fresh[i:i + SLICE_RECORDS], decoded[i:i + SLICE_RECORDS], rows)
            await asyncio.sleep(0)
        self.expected.update(rows.next_offsets)
        return Prepared(records, rows, base, len(fresh), time.perf_counter() - started)

    async def _finish_in_flight(self, pending: Prepared | None) -> tuple[list[BatchResult], bool]:
        """The write in flight's result, and whether `pending` (folded on top of it) was applied too."""
        if self.in_flight is None:
            return [], False
        batch, task = self.in_flight
        self.in_flight = None
        try:
            return [await task], False
        except Stale as e:
            # Neither the batch in flight nor the one folded on top of it can stand: redo both from
            # PostgreSQL's state, one transaction each, and carry nothing over.
            log.warning("carried state is stale (%s); applying the last %d records the plain way", e,
                        len(batch.records) + (len(pending.records) if pending else 0))
            self._reset()
            redo = [batch.records] + ([pending.records] if pending is not None else [])
            return [await self._apply_plain(records) for records in redo], pending is not None

    async def _apply_plain(self, records: list[Record]) -> BatchResult:
        return await self._retrying("writer", lambda conn: apply_batch(conn, records, self.publish, self.schema))

    async def _retrying(self, name: str, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        for attempt in range(self.retry_attempts_max):
            try:
                conn = self.connections[name]
                if conn is None or conn.is_closed():
                    conn = self.connections[name] = await self.connect()
                return await call(conn)
            except self.transient as e:
                delay = min(RECONNECT_BACKOFF_S_MAX, 0.05 * 2**attempt)
                log.warning("PostgreSQL or Kafka unavailable (%r); retrying in %.2f s", e, delay)
                broken = self.connections[name]
                if broken is not None:
                    broken.terminate()
                self.connections[name] = None
                await asyncio.sleep(delay)
        raise RuntimeError(f"PostgreSQL unreachable after {self.retry_attempts_max} attempts")
