"""The projector's one apply path: batches folded while earlier ones are written, on state carried from batch
to batch (checked under the offsets row lock at every write, else dropped and redone from PostgreSQL); the
plain way, one batch per transaction on committed state; and poison isolation, a batch PostgreSQL refuses for
what a record holds split in halves until that record is found and decided `invalid`. The design:
docs/architecture.md ("The log and the projector") and docs/decisions.md (poison isolation)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from infra.retry import Backoff, retrying
from ledger.batch import BatchRows, Decoded, Record, decode_all, error_text
from ledger.fold import POISON_AS_EVENT, fold_batch
from ledger.memory import Ledger
from ledger.plan import Needs
from ledger.positions import Position, PositionKey
from ledger.requests import Tick, TransferRequest
from ledger.shown import answers
from projections.faults import Poisoned, Transient, translated
from projections.writer import Publish, begin, committed_offsets, open_batch, preload, store

log = logging.getLogger("ledger.projector")

PASSED_OVER = Tick()  # what a record `keep` refuses is folded as: its time only

# For the processes that fold (the projector, `ledger replay`/`verify`): a fold allocates millions of
# short-lived acyclic tuples while the state it works on holds ~10^5 long-lived objects. With the default
# threshold (700) the collector re-scans those all the time, which measured here doubled decode and fold
# times. Reference counting frees the tuples; collections can be rare.
GC_THRESHOLDS = (50_000, 20, 100)
# Past this many carried balances, ids, keys and tenants, the state is dropped (once no write is in flight).
CARRIED_KEYS_MAX = 500_000
RECONNECT_BACKOFF = Backoff(first_s=0.05, cap_s=2.0)
# How long one database call is retried against a fault of the surroundings before the worker gives up (and
# exits for a supervisor to restart it). Calls follow one another (bisection, stale redos), so the worker as a
# whole is bounded by the projector's watchdog (30 s without progress while records wait) and by SIGTERM.
RETRY_DEADLINE_S = 20.0
# Decode and fold in slices, yielding to the event loop between them: the write in flight streams its COPY
# only when this coroutine lets it run, and PostgreSQL idles while it does not.
SLICE_RECORDS = 100
POISON_REMEMBERED_MAX = 10_000
# The plain way reads the offsets, then writes; another worker taking the partitions in between makes the
# write stale, and it is redone on the new state (the records that worker applied are then skipped).
STALE_REDOS_MAX = 5
# Writes queued one behind the other (LEDGER_WRITES_IN_FLIGHT): with 2, while batch N is written, N+1 waits its
# turn, folded, and N+2 is folded. With 1, the process idled while N's last statements, its outcomes'
# acknowledgement and its commit ran (a third of each cycle, measured), and PostgreSQL idled while N+1 was
# folded.
WRITES_IN_FLIGHT = 2
# ... but only behind a backlog: a batch this small queues behind no write. Under light load, waiting for the
# write in flight lets the next batch gather what arrives meanwhile; folding and queueing every few records
# instead made many small writes, each with its round trips, acknowledgement and commit (POST ?wait=true p50
# 8.0 -> 11.6 ms at 100/s, and fewer transfers served at the post-mortem's 10x).
BACKLOG_RECORDS = 1000

Connect = Callable[[], Awaitable[asyncpg.Connection]]
Keep = Callable[[Record], bool]
T = TypeVar("T")


class Stale(Exception):
    """A partition is not where this process left it, or the projection was switched: the carried state
    cannot be trusted."""


class OffsetGap(RuntimeError):
    """Records arrived past the projection's next offset: applying them would skip the ones in between."""


class Skipped(Exception):
    """A write not attempted: the one queued before it did not succeed."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch did: outcomes published, counts by status and reason, records applied and skipped as
    redelivered, the time it took, and where the projection now stands in each partition it touched."""

    outcomes: list[tuple[int, bytes, bytes]]
    counts: dict[tuple[str, str | None], int]
    applied: int
    skipped: int
    apply_s: float
    next_offsets: dict[int, int]


@dataclass(slots=True)
class Prepared:
    """A folded batch, waiting for its write: `base` is where its partitions stood in `schema` when it was
    folded."""

    records: list[Record]
    rows: BatchRows
    base: dict[int, int]
    schema: str
    fresh: int
    folded_s: float


def check_contiguous(records: list[Record], next_offsets: dict[int, int]) -> None:
    """The one offset guard: records must follow on from `next_offsets` without a gap.

    The log has no gaps (no compaction, no transactional producers, retention forever, so it starts at 0),
    so a gap means the consumer is positioned wrong; refusing is the only way not to lose the records in
    between."""
    expected = dict(next_offsets)
    for record in records:
        want = expected[record.partition]
        if record.offset != want:
            raise OffsetGap(f"partition {record.partition}: got offset {record.offset}, expected {want}")
        expected[record.partition] = record.offset + 1


async def write(conn: asyncpg.Connection, batch: Prepared, publish: Publish | None,
                schema: str | None = None) -> BatchResult:
    """Write a folded batch in one transaction with its offsets, if its partitions stand at `batch.base` in
    the projection it was folded on."""
    started = time.perf_counter()
    rows = batch.rows
    assert publish is None or rows.positions is not None, "outcomes are published only with the position key"
    after = batch.base | rows.next_offsets
    async with conn.transaction():
        standing, projection = await open_batch(conn, sorted(batch.base), schema)
        if projection != batch.schema:
            raise Stale(f"the projection is {projection}, the batch was folded on {batch.schema}")
        if standing == after:  # an earlier attempt committed; its acknowledgement was lost
            return BatchResult([], {}, 0, len(batch.records), time.perf_counter() - started, standing)
        if standing != batch.base:
            raise Stale(f"partitions stand at {standing}, folded at {batch.base}")
        await store(conn, rows, publish, notify=schema is None)
    return BatchResult(rows.outcomes, rows.counts, batch.fresh, len(batch.records) - batch.fresh,
                       batch.folded_s + time.perf_counter() - started, after)


class Pipeline:
    """Batches folding while earlier ones are written (`writes_in_flight` at most); `submit` and
    `drain` return finished writes, in order.

    Writes go to the live projection, or to `schema` (tests, rebuilds, verification). `partitions` is the
    log's partition count (placement is checked against it). With `keep`, records it refuses are passed
    over (offsets move, nothing is decided): `ledger verify --tenant`. Outcomes are encoded, their positions
    sealed, only with `positions`, which a pipeline that publishes them must have.
    """

    def __init__(self, connect: Connect, publish: Publish | None, partitions: int, schema: str | None = None,
                 retry_deadline_s: float = RETRY_DEADLINE_S, keep: Keep | None = None,
                 positions: PositionKey | None = None, writes_in_flight: int = WRITES_IN_FLIGHT) -> None:
        self.connect = connect
        self.publish = publish
        self.positions = positions
        self.partitions = partitions
        self.schema = schema  # None: the live projection
        self.retry_deadline_s = retry_deadline_s
        self.writes_in_flight = writes_in_flight
        self.keep = keep
        self.connections: dict[str, asyncpg.Connection | None] = {"reader": None, "writer": None}
        self.ledger = Ledger()
        self.expected: dict[int, int] = {}
        self.state_schema: str | None = None  # the projection the carried state was read from
        self.in_flight: list[tuple[Prepared, asyncio.Task[BatchResult]]] = []  # in the order they commit
        self.reset_wanted = False  # set on a rebalance: drop the carried state at the next batch
        self.poison: dict[Position, tuple[int, str]] = {}

    async def submit(self, records: list[Record]) -> list[BatchResult]:
        """Fold `records` while earlier batches are written, then queue their write behind those."""
        done: list[BatchResult] = []
        if self.reset_wanted or self._carried() > CARRIED_KEYS_MAX:
            done = await self.drain()
            self._reset()
        try:
            batch = await self._retrying("reader", lambda conn: self._prepare(conn, records))
        except (Stale, Poisoned):
            return [*done, *await self.drain(), *await self._plain(records)]
        queued_max = self.writes_in_flight if len(records) >= BACKLOG_RECORDS else 1
        while self.in_flight and (len(self.in_flight) >= queued_max or not batch.fresh):
            finished, redone = await self._finish_oldest(pending=batch)
            done += finished
            if redone:
                return done
        if not batch.fresh:  # every record was applied before: nothing to write
            return [*done, BatchResult([], {}, 0, len(records), batch.folded_s, batch.base)]
        before = self.in_flight[-1][1] if self.in_flight else None
        self.in_flight.append((batch, asyncio.create_task(self._write_after(before, batch))))
        return done

    async def drain(self) -> list[BatchResult]:
        """Wait for the writes in flight; afterwards PostgreSQL holds everything submitted."""
        done: list[BatchResult] = []
        while self.in_flight:
            done += (await self._finish_oldest(pending=None))[0]
        return done

    async def close(self) -> None:
        # Ended before the connections are: a write cancelled mid-transaction must not see its connection
        # closed, take that for a fault of the surroundings and retry on a new one.
        await self._abandon(self.in_flight)
        for name, conn in self.connections.items():
            if conn is not None:
                conn.terminate()
                self.connections[name] = None

    # --- internals ------------------------------------------------------------------------------------

    def _carried(self) -> int:
        ledger = self.ledger
        return (len(ledger.balances) + len(ledger.by_id) + len(ledger.by_key) + len(ledger.tenants)
                + len(ledger.holds) + len(ledger.originals) + len(ledger.policies) + len(ledger.monitors))

    def _reset(self) -> None:
        assert not self.in_flight
        self.ledger = Ledger()
        self.expected = {}
        self.state_schema = None
        self.reset_wanted = False

    async def _prepare(self, conn: asyncpg.Connection, records: list[Record]) -> Prepared:
        started = time.perf_counter()
        partitions = {r.partition for r in records}
        decoded: list[Decoded] = []
        for i in range(0, len(records), SLICE_RECORDS):
            decoded += decode_all(records[i:i + SLICE_RECORDS], self.partitions)
            await asyncio.sleep(0)
        async with conn.transaction(readonly=True):
            schema = await begin(conn, self.schema)
            if self.state_schema is not None and schema != self.state_schema:
                raise Stale(f"the projection switched from {self.state_schema} to {schema}")
            self.state_schema = schema
            if not partitions <= self.expected.keys():
                known = await committed_offsets(conn, schema)
                self.expected.update({p: known.get(p, 0) for p in partitions - self.expected.keys()})
            base = {p: self.expected[p] for p in partitions}
            fresh_at = [i for i, r in enumerate(records) if r.offset >= base[r.partition]]
            fresh = [records[i] for i in fresh_at]
            check_contiguous(fresh, base)
            kept = [i for i in fresh_at if self.keep is None or self.keep(records[i])]
            due: dict[int, int] = {}
            for i in fresh_at:  # holds expire by the time of any record of their partition, kept or not
                due[records[i].partition] = max(due.get(records[i].partition, 0), records[i].timestamp_ms)
            await self._preload(conn, [decoded[i] for i in kept], due)
        rows = BatchRows(positions=self.positions)
        # A record passed over (`keep`) still carries its time to the fold, as a tick does: the holds it
        # expires in the live projection expire here at the same record (a version, `held`, a hold's state).
        if len(kept) < len(fresh_at):
            kept_at = set(kept)
            decoded = [d if j in kept_at else PASSED_OVER for j, d in enumerate(decoded)]
        for i in range(0, len(fresh_at), SLICE_RECORDS):
            part = fresh_at[i:i + SLICE_RECORDS]
            fold_batch(self.ledger, [records[j] for j in part], [decoded[j] for j in part], rows, self.poison)
            await asyncio.sleep(0)
        rows.next_offsets.update({r.partition: r.offset + 1 for r in fresh})
        self.expected.update(rows.next_offsets)
        if self.schema is None and self.positions is not None:  # the live projection's, which the API reads
            asked = [(records[j], decoded[j]) for j in fresh_at if records[j].answer]
            transfers = [(r, d) for r, d in asked if isinstance(d, TransferRequest)]
            if transfers:
                rows.answers = answers(rows, [r for r, _ in transfers], [(d.tenant, d.id) for _, d in transfers],
                                       self.positions)
        return Prepared(records, rows, base, schema, len(fresh), time.perf_counter() - started)

    async def _preload(self, conn: asyncpg.Connection, decoded: list[Decoded], due: dict[int, int]) -> None:
        await preload(conn, Needs(decoded), due, self.ledger)

    async def _write_after(self, before: asyncio.Task[BatchResult] | None, batch: Prepared) -> BatchResult:
        """Write `batch` once the write queued before it has committed; not at all if that one failed."""
        if before is not None:
            await asyncio.wait([before])
            if before.cancelled() or before.exception() is not None:
                raise Skipped("the write before it failed")
        return await self._retrying("writer", lambda conn: write(conn, batch, self.publish, self.schema))

    async def _abandon(self, writes: list[tuple[Prepared, asyncio.Task[BatchResult]]]) -> None:
        """Cancel `writes` and wait until they have ended; none is in flight afterwards."""
        for _, task in writes:
            task.cancel()
        await asyncio.gather(*[task for _, task in writes], return_exceptions=True)
        self.in_flight = []

    async def _finish_oldest(self, pending: Prepared | None) -> tuple[list[BatchResult], bool]:
        """The oldest write's result, and whether `pending` (folded on top of every write in flight) was
        applied too."""
        batch, task = self.in_flight[0]
        try:
            result = await task
        except (Stale, Poisoned) as e:
            # Neither this batch nor those folded on top of it can stand: redo them all from PostgreSQL's
            # state, the plain way, and carry nothing over.
            behind = [b for b, _ in self.in_flight[1:]] + ([pending] if pending is not None else [])
            await self._abandon(self.in_flight[1:])
            log.warning("redoing the last %d records the plain way (%r)",
                        sum(len(b.records) for b in [batch, *behind]), e)
            results: list[BatchResult] = []
            for redo in [batch, *behind]:
                results += await self._plain(redo.records)
            return results, pending is not None
        self.in_flight.pop(0)
        return [result], False

    async def _plain(self, records: list[Record]) -> list[BatchResult]:
        """Apply `records` on PostgreSQL's committed state, one transaction each; bisect when PostgreSQL
        refuses what a record holds (see the module's docstring)."""
        try:
            result = await self._apply_fresh(records)
        except Poisoned as e:
            self._reset()
            if len(records) > 1:
                middle = len(records) // 2
                return [*await self._plain(records[:middle]), *await self._plain(records[middle:])]
            return await self._isolated(records[0], e)
        self.poison.pop(records[0].position, None)
        return [result]

    async def _isolated(self, record: Record, error: Poisoned) -> list[BatchResult]:
        level = self.poison.get(record.position, (0, ""))[0] + 1
        if level > POISON_AS_EVENT:
            raise error  # not even the operators' table takes it: not the record's doing
        log.error("record %s refused by the database (%r); deciding it invalid", record.position.raw(), error)
        if len(self.poison) >= POISON_REMEMBERED_MAX:
            self.poison.clear()  # forgetting costs only a second bisection, should such a record come again
        # The first refusal is the record's own; a later one (of its rejection row) says less about it.
        first = self.poison.get(record.position, (0, error_text(error.detail)))[1]
        self.poison[record.position] = (level, first)
        return await self._plain([record])

    async def _apply_fresh(self, records: list[Record]) -> BatchResult:
        for redo in range(STALE_REDOS_MAX):
            try:
                return await self._retrying("writer", lambda conn: self._apply_once(conn, records))
            except Stale as e:
                log.info("partitions moved while applying the plain way (%s); redo %d", e, redo + 1)
        raise Stale(f"the partitions kept moving over {STALE_REDOS_MAX} attempts")

    async def _apply_once(self, conn: asyncpg.Connection, records: list[Record]) -> BatchResult:
        self._reset()
        return await write(conn, await self._prepare(conn, records), self.publish, self.schema)

    async def _retrying(self, name: str, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`call` on the named connection; a transient fault reopens it and retries until the deadline (the
        project's one retry policy, `infra.retry`)."""

        async def attempt() -> T:
            conn = self.connections[name]
            if conn is None or conn.is_closed():
                conn = await self.connect()
                # A plan per execution: asyncpg prepares the batch's statements, and PostgreSQL's generic plan,
                # made while a projection's tables were nearly empty, joined a batch's 5,000 ids to
                # `transactions` by scanning it for each (21 s for one batch, past the watchdog, measured
                # during the fairness bench on a fresh database); a custom plan sees the table as it is.
                await conn.execute("SET plan_cache_mode = force_custom_plan")
                self.connections[name] = conn
            return await call(conn)

        def drop(_: BaseException) -> None:
            broken = self.connections[name]
            if broken is not None:
                broken.terminate()
            self.connections[name] = None

        return await retrying(lambda: translated(attempt()), transient=lambda e: isinstance(e, Transient),
                              backoff=RECONNECT_BACKOFF, deadline_s=self.retry_deadline_s, what="PostgreSQL or Kafka",
                              on_retry=drop, log=log)
