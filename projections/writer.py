"""The batch writer: one PostgreSQL transaction per batch, holding its rows and its offsets.

Exactly-once effect: the offsets row of each partition is locked and read first; records below it were
applied by an earlier delivery and are skipped. Set-based SQL only: a few statements per batch,
whatever its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import asyncpg
import orjson

from infra.settings import PROGRESS_CHANNEL
from ledger.decisions import BalanceKey, Ledger, touched
from ledger.errors import InvalidRequest
from ledger.requests import TransactionRequest
from projections.batches import (
    ENTRY_COLUMNS,
    IDEMPOTENCY_COLUMNS,
    INVALID_EVENT_COLUMNS,
    TRANSACTION_COLUMNS,
    BatchRows,
    Record,
    decided_from_row,
    decode_all,
    fold_batch,
)

log = logging.getLogger("ledger.projector")

# The log an offsets row counts in: the contract's name of the transactions topic, whatever the deployment
# calls its topic (the API's `api_offsets()` reads the same name).
OFFSETS_LOG = "ledger.transactions"

SCHEMA_RE = re.compile(r"(proj|verify)_[a-z0-9_]{1,40}", re.ASCII)

OPEN_BATCH = "SELECT log_partition, next_offset FROM projector_begin_batch($1, $2::int[], $3)"
SELECT_BALANCES = """
SELECT b.tenant, b.account, b.asset, b.balance FROM balances b
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, account, asset)
  ON b.tenant = k.tenant AND b.account = k.account AND b.asset = k.asset
"""
SELECT_BY_ID = """
SELECT t.tenant, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset FROM transactions t
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON t.tenant = k.tenant AND t.id = k.id
"""
SELECT_BY_KEY = """
SELECT i.key, t.tenant, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset
FROM idempotency_keys i
JOIN unnest($1::text[], $2::text[]) AS k(tenant, key) ON i.tenant = k.tenant AND i.key = k.key
JOIN transactions t ON t.tenant = i.tenant AND t.id = i.transaction_id
"""
UPSERT_BALANCES = """
INSERT INTO balances (tenant, account, asset, balance, log_partition, log_offset)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::bigint[])
ON CONFLICT (tenant, account, asset) DO UPDATE
SET balance = excluded.balance, log_partition = excluded.log_partition, log_offset = excluded.log_offset
"""
UPDATE_OFFSETS = """
UPDATE projection_offsets o SET next_offset = n.next_offset, updated_at = now()
FROM unnest($2::int[], $3::bigint[]) AS n(log_partition, next_offset)
WHERE o.topic = $1 AND o.log_partition = n.log_partition
"""
# The same, and the API's progress notification (delivered on commit only, so a waiter never wakes for rows
# it cannot see yet), in one round trip.
UPDATE_OFFSETS_AND_NOTIFY = f"""
WITH moved AS ({UPDATE_OFFSETS} RETURNING 1)
SELECT pg_notify($4, $5) FROM (SELECT count(*) FROM moved) AS done
"""


Publish = Callable[[list[tuple[int, bytes, bytes]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a batch did: outcomes to publish, counts by status and reason, records skipped as redelivered,
    and where the projection now stands in each partition the batch touched."""

    outcomes: list[tuple[int, bytes, bytes]]
    counts: dict[tuple[str, str | None], int]
    applied: int
    skipped: int
    apply_s: float
    next_offsets: dict[int, int]


def _columns(keys: Iterable[tuple[str, ...]], width: int) -> list[list[str]]:
    columns: list[list[str]] = [[] for _ in range(width)]
    for key in keys:
        for i in range(width):
            columns[i].append(key[i])
    return columns


async def preload(conn: asyncpg.Connection, requests: list[TransactionRequest], ledger: Ledger) -> None:
    """Load into `ledger` every balance, id and idempotency key the requests touch that it does not hold."""
    # Comprehensions, not `set - dict.keys()`: that iterates the whole (carried, large) dict every batch.
    keys: set[BalanceKey] = {k for k in touched(requests) if k not in ledger.balances}
    if keys:
        for row in await conn.fetch(SELECT_BALANCES, *_columns(keys, 3)):
            ledger.balances[(row["tenant"], row["account"], row["asset"])] = row["balance"]
    ids = {(r.tenant, r.id) for r in requests if (r.tenant, r.id) not in ledger.by_id}
    if ids:
        for row in await conn.fetch(SELECT_BY_ID, *_columns(ids, 2)):
            ledger.by_id[(row["tenant"], row["id"])] = decided_from_row(dict(row))
    idem = {(r.tenant, r.idempotency_key) for r in requests
            if r.idempotency_key is not None and (r.tenant, r.idempotency_key) not in ledger.by_key}
    if idem:
        for row in await conn.fetch(SELECT_BY_KEY, *_columns(idem, 2)):  # type: ignore[arg-type]
            ledger.by_key[(row["tenant"], row["key"])] = decided_from_row(dict(row))


async def store(conn: asyncpg.Connection, rows: BatchRows, publish: Publish | None, notify: bool) -> None:
    """Write a batch's rows and offsets; `publish` its outcomes meanwhile (done before this returns, so
    before the commit); `notify` the API when this is the live projection."""
    sending = asyncio.ensure_future(publish(rows.outcomes)) if publish is not None else None
    try:
        await _write_rows(conn, rows, notify)
        if sending is not None:
            await sending
    finally:
        if sending is not None and not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sending


async def _write_rows(conn: asyncpg.Connection, rows: BatchRows, notify: bool) -> None:
    if rows.transactions:
        await conn.copy_records_to_table("transactions", records=rows.transactions, columns=TRANSACTION_COLUMNS)
    if rows.entries:
        await conn.copy_records_to_table("entries", records=rows.entries, columns=ENTRY_COLUMNS)
    if rows.idempotency_keys:
        await conn.copy_records_to_table("idempotency_keys", records=rows.idempotency_keys,
                                         columns=IDEMPOTENCY_COLUMNS)
    if rows.invalid_events:
        await conn.copy_records_to_table("invalid_events", records=rows.invalid_events,
                                         columns=INVALID_EVENT_COLUMNS)
    if rows.balances:
        items = list(rows.balances.items())
        await conn.execute(
            UPSERT_BALANCES,
            [k[0] for k, _ in items], [k[1] for k, _ in items], [k[2] for k, _ in items],
            [v[0] for _, v in items], [v[1].partition for _, v in items], [v[1].offset for _, v in items],
        )
    parts = sorted(rows.next_offsets)
    offsets = [rows.next_offsets[p] for p in parts]
    if not notify:  # a rebuild's or a verification's schema: the API's progress is the live projection's
        await conn.execute(UPDATE_OFFSETS, OFFSETS_LOG, parts, offsets)
        return
    payload = orjson.dumps({str(p): rows.next_offsets[p] for p in parts}).decode()
    await conn.execute(UPDATE_OFFSETS_AND_NOTIFY, OFFSETS_LOG, parts, offsets, PROGRESS_CHANNEL, payload)


class OffsetGap(RuntimeError):
    """Records arrived past the projection's next offset: applying them would skip the ones in between."""


def _check_contiguous(records: list[Record], next_offsets: dict[int, int]) -> None:
    # The log has no gaps (no compaction, no transactional producers), so a gap means the consumer is
    # positioned wrong; refusing is the only way not to lose the records in between. A projection that has
    # applied nothing yet starts wherever the log starts.
    expected = dict(next_offsets)
    for record in records:
        want = expected[record.partition]
        if record.offset != want and want != 0:
            raise OffsetGap(f"partition {record.partition}: got offset {record.offset}, expected {want}")
        expected[record.partition] = record.offset + 1


def schema_path(schema: str) -> str:
    assert SCHEMA_RE.fullmatch(schema), f"not a projection schema name: {schema!r}"
    return f"{schema}, public"


async def begin(conn: asyncpg.Connection, schema: str | None) -> str:
    """Point this transaction at the live projection (waiting while an operator switches it) or at `schema`;
    returns the schema it points at."""
    if schema is None:
        return str(await conn.fetchval("SELECT projector_begin()"))
    await conn.execute("SELECT set_config('search_path', $1, true)", schema_path(schema))
    return schema


async def open_batch(conn: asyncpg.Connection, partitions: list[int], schema: str | None) -> dict[int, int]:
    """`begin`, then the next offset of each of `partitions`, their rows locked until the transaction ends."""
    assert schema is None or SCHEMA_RE.fullmatch(schema), f"not a projection schema name: {schema!r}"
    rows = await conn.fetch(OPEN_BATCH, OFFSETS_LOG, partitions, schema)
    return {r["log_partition"]: r["next_offset"] for r in rows}


def fresh_records(records: list[Record], next_offsets: dict[int, int]) -> list[Record]:
    """The records not applied yet, checked to follow on from `next_offsets` without a gap."""
    fresh = [r for r in records if r.offset >= next_offsets[r.partition]]
    _check_contiguous(fresh, next_offsets)
    return fresh


async def apply_batch(conn: asyncpg.Connection, records: list[Record], publish: Publish | None = None,
                      schema: str | None = None) -> BatchResult:
    """Apply `records` (in log order per partition) in one transaction with their offsets.

    Into the live projection by default (waiting while an operator switches it), or into `schema` (a
    rebuild). `publish` gets the batch's outcomes before the commit: a crash after publishing redoes the
    batch and publishes again, so outcomes are delivered at least once and never lost.
    """
    started = time.perf_counter()
    partitions = sorted({r.partition for r in records})
    async with conn.transaction():
        next_offsets = await open_batch(conn, partitions, schema)
        fresh = fresh_records(records, next_offsets)
        if not fresh:
            return BatchResult([], {}, 0, len(records), time.perf_counter() - started, next_offsets)
        decoded = decode_all(fresh)
        ledger = Ledger()
        await preload(conn, [d for d in decoded if not isinstance(d, InvalidRequest)], ledger)
        rows = fold_batch(ledger, fresh, decoded)
        await store(conn, rows, publish, notify=schema is None)
    return BatchResult(rows.outcomes, rows.counts, len(fresh), len(records) - len(fresh),
                       time.perf_counter() - started, next_offsets | rows.next_offsets)


async def committed_offsets(conn: asyncpg.Connection, schema: str) -> dict[int, int]:
    """The next offset to apply of every partition the projection in `schema` has seen."""
    assert SCHEMA_RE.fullmatch(schema)
    rows = await conn.fetch(f"SELECT log_partition, next_offset FROM {schema}.projection_offsets WHERE topic = $1",
                            OFFSETS_LOG)
    return {r["log_partition"]: r["next_offset"] for r in rows}
