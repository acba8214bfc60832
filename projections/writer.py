"""The projector's SQL adapter: load the state a batch needs, store what its fold produced, and open each
batch's transaction with its partitions' offsets locked. Set-based SQL only: a few statements per batch,
whatever its size. asyncpg's errors are classified here (`transient`, `poison`), nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import orjson

from infra.producer import ProduceFailed
from infra.settings import KEYS_CHANNEL, PROGRESS_CHANNEL
from ledger.changes import account_key, payloads
from ledger.fold import EPOCH, BatchRows
from ledger.memory import Ledger
from ledger.plan import Needs
from ledger.positions import Position
from ledger.requests import (
    Posting,
    Watch,
)
from ledger.rows import (
    ACCOUNT_COLUMNS,
    BALANCE_COLUMNS,
    BATCH_COLUMNS,
    ENTRY_COLUMNS,
    HOLD_COLUMNS,
    IDEMPOTENCY_COLUMNS,
    INVALID_EVENT_COLUMNS,
    MONITOR_COLUMNS,
    REPLAY_COLUMNS,
    TENANT_COLUMNS,
    TRANSACTION_COLUMNS,
)
from ledger.state import NO_POLICY, BalanceKey, Decided, Hold, Monitor, Original, Policy

SCHEMA_RE = re.compile(r"(proj|verify)_[a-z0-9_]{1,40}", re.ASCII)
# The log an offsets row counts in: the contract's name of the transactions topic, whatever the deployment
# calls its topic (the API's `api_offsets()` reads the same name).
OFFSETS_LOG = "ledger.transactions"

OPEN_BATCH = "SELECT log_partition, next_offset, projection FROM projector_open_batch($1, $2::int[], $3)"
SELECT_BALANCES = """
SELECT b.tenant, b.account, b.asset, b.balance, b.held, b.credits_total, b.entries_count FROM balances b
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, account, asset)
  ON b.tenant = k.tenant AND b.account = k.account AND b.asset = k.asset
"""
# An id is taken by a decided request, or by a repeat of one (then it stands for the original).
SELECT_BY_ID = """
SELECT t.tenant, t.id AS asked, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset
FROM transactions t
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON t.tenant = k.tenant AND t.id = k.id
UNION ALL
SELECT t.tenant, r.id AS asked, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset
FROM replays r
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON r.tenant = k.tenant AND r.id = k.id
JOIN transactions t ON t.tenant = r.tenant AND t.id = r.original_id
"""
# A key is bound by a request (`idempotency_keys`) or by a whole batch (`batches`, with its items' ids).
SELECT_BY_KEY = """
SELECT i.key, t.tenant, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset, NULL::text[] AS items
FROM idempotency_keys i
JOIN unnest($1::text[], $2::text[]) AS k(tenant, key) ON i.tenant = k.tenant AND i.key = k.key
JOIN transactions t ON t.tenant = i.tenant AND t.id = i.transaction_id
UNION ALL
SELECT b.idempotency_key, b.tenant, b.id, b.status, b.reason, b.fingerprint, b.log_partition, b.log_offset, b.items
FROM batches b
JOIN unnest($1::text[], $2::text[]) AS k(tenant, key) ON b.tenant = k.tenant AND b.idempotency_key = k.key
"""
# Whether each tenant exists, and how many monitors it has active (the fold bounds them per tenant).
SELECT_TENANTS = """
SELECT t.id, (SELECT count(*) FROM monitors m WHERE m.tenant = t.id AND m.active) AS monitors FROM tenants t
WHERE t.id = ANY($1::text[])
"""
SELECT_CHAINS = "SELECT tenant, count, head FROM chains WHERE tenant = ANY($1::text[])"
UPSERT_CHAINS = """
INSERT INTO chains (tenant, count, head, log_partition, log_offset)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::int[], $5::bigint[])
ON CONFLICT (tenant) DO UPDATE SET count = excluded.count, head = excluded.head,
    log_partition = excluded.log_partition, log_offset = excluded.log_offset
"""
SELECT_BATCHES = """
SELECT b.tenant, b.id, b.items FROM batches b
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON b.tenant = k.tenant AND b.id = k.id
"""
HOLD_FIELDS = ("h.tenant, h.id, h.state, h.postings, h.expires_at, h.log_partition, h.log_offset, h.closed_by,"
               " h.closed_at")
SELECT_HOLDS = f"""
SELECT {HOLD_FIELDS} FROM holds h
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON h.tenant = k.tenant AND h.id = k.id
"""
# Open holds of these partitions whose time has come by the batch's last record (index holds_open_by_expiry).
SELECT_DUE_HOLDS = f"""
SELECT {HOLD_FIELDS} FROM holds h
WHERE h.state = 'held' AND h.log_partition = ANY($1::int[]) AND h.expires_at <= $2
"""
# With each account's policy and version, its active balance monitors (a row each, `monitor` set) in the order
# they were created: one round trip, and most accounts have none (an index probe on an empty partial index).
SELECT_POLICIES = """
SELECT a.tenant, a.account, a.metadata, a.overdraft_limit, a.frozen, a.version,
       NULL::text AS monitor, NULL::text AS asset, NULL::bigint AS below, NULL::bigint AS above, 0::bigint AS o
FROM accounts a
JOIN unnest($1::text[], $2::text[]) AS k(tenant, account) ON a.tenant = k.tenant AND a.account = k.account
UNION ALL
SELECT m.tenant, m.account, NULL, NULL, NULL, NULL, m.id, m.asset, m.below, m.above, m.log_offset FROM monitors m
JOIN unnest($1::text[], $2::text[]) AS k(tenant, account) ON m.tenant = k.tenant AND m.account = k.account
WHERE m.active
ORDER BY o
"""
SELECT_MONITORS = """
SELECT m.tenant, m.id, m.account, m.asset, m.below, m.above, m.active FROM monitors m
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON m.tenant = k.tenant AND m.id = k.id
"""
UPDATE_MONITORS = """
UPDATE monitors m SET active = false, removed_at = c.at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS c(tenant, id, at)
WHERE m.tenant = c.tenant AND m.id = c.id
"""
# An account's version (contract v3), and the position and time of the last record that changed it (whatever
# the batches were: a replay writes the same row); an account with no policy gets a row of its own, with the
# empty policy (what no row means).
UPSERT_VERSIONS = """
INSERT INTO accounts (tenant, account, metadata, overdraft_limit, frozen, log_partition, log_offset, updated_at,
                      version)
SELECT k.tenant, k.account, '{}', '{}', false, k.p, k.o, k.at, k.v
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::timestamptz[], $6::bigint[])
    AS k(tenant, account, p, o, at, v)
ON CONFLICT (tenant, account) DO UPDATE
SET version = excluded.version, log_partition = excluded.log_partition, log_offset = excluded.log_offset,
    updated_at = excluded.updated_at
"""
UPSERT_ACCOUNTS = """
INSERT INTO accounts (tenant, account, metadata, overdraft_limit, frozen, log_partition, log_offset, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::bool[], $6::int[], $7::bigint[],
                     $8::timestamptz[])
ON CONFLICT (tenant, account) DO UPDATE
SET metadata = excluded.metadata, overdraft_limit = excluded.overdraft_limit, frozen = excluded.frozen,
    log_partition = excluded.log_partition, log_offset = excluded.log_offset, updated_at = excluded.updated_at
"""
SELECT_ORIGINALS = """
SELECT t.tenant, t.id, t.kind, t.status, t.postings, t.reversed FROM transactions t
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON t.tenant = k.tenant AND t.id = k.id
"""
UPSERT_BALANCES = f"""
INSERT INTO balances ({", ".join(BALANCE_COLUMNS)})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::int[],
                     $8::bigint[], $9::numeric[], $10::bigint[])
ON CONFLICT (tenant, account, asset) DO UPDATE
SET balance = excluded.balance, held = excluded.held, overdraft_limit = excluded.overdraft_limit,
    log_partition = excluded.log_partition, log_offset = excluded.log_offset,
    credits_total = excluded.credits_total, entries_count = excluded.entries_count
"""
UPDATE_HOLDS = """
UPDATE holds h SET state = c.state, closed_by = c.closed_by, closed_at = c.closed_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS c(tenant, id, state, closed_by,
                                                                                     closed_at)
WHERE h.tenant = c.tenant AND h.id = c.id
"""
UPDATE_REVERSED = """
UPDATE transactions t SET reversed = c.reversed
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS c(tenant, id, reversed)
WHERE t.tenant = c.tenant AND t.id = c.id
"""
# A batch's last round trip: its balances, its offsets and the API's notifications (delivered on commit only,
# so a waiter never wakes for rows it cannot see yet). Data-modifying CTEs run to completion, read or not.
WRITE_TAIL = f"""
WITH moved AS ({UPSERT_BALANCES} RETURNING 1),
     advanced AS (UPDATE projection_offsets o SET next_offset = n.next_offset, updated_at = now()
                  FROM unnest($12::int[], $13::bigint[]) AS n(log_partition, next_offset)
                  WHERE o.topic = $11 AND o.log_partition = n.log_partition RETURNING 1)
SELECT pg_notify($14, p) FROM unnest($15::text[]) AS p
"""  # unnest yields the array in order, and notifications are delivered in the order they were sent
NOTIFY_TENANTS = "SELECT pg_notify($1, 'tenant:' || t) FROM unnest($2::text[]) AS t"

DUE_MS_MAX = 253_402_300_799_000  # 9999-12-31T23:59:59Z, the last instant Python's datetime holds

T = TypeVar("T")
Publish = Callable[[list[tuple[int, bytes, bytes]]], Awaitable[None]]

# Faults that retrying the same work on a fresh connection can fix: the network, the server going away or
# refusing for now, lack of resources, conflicts between transactions. InternalClientError is what asyncpg
# raises when the server goes away in the middle of a COPY.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
             asyncpg.AdminShutdownError, asyncpg.InternalClientError, asyncpg.SerializationError,
             asyncpg.DeadlockDetectedError, asyncpg.InsufficientResourcesError, asyncpg.OperatorInterventionError,
             asyncpg.InternalServerError, asyncpg.PostgresSystemError)
# SQLSTATE classes a record's own values cause: data exceptions (22: NUL, out of range, bad encoding),
# integrity violations (23: an id already taken) and program limits (54: an index row too large).
POISON_SQLSTATE_CLASSES = ("22", "23", "54")
# Except these: the database's own statement of what the fold guarantees. Violating one is a bug in the
# ledger, not in a record: the worker stops rather than decide the record invalid.
INVARIANT_CONSTRAINTS = frozenset({"entries_amount_not_zero", "transactions_committed_at_iff_committed",
                                   "balances_customer_not_negative", "balances_held_not_negative",
                                   "balances_customer_available", "balances_limit_not_negative",
                                   "balances_customer_within_limit", "transactions_kind"})


class Transient(Exception):
    """A fault of the surroundings (PostgreSQL or Kafka unreachable, restarting, in conflict): the same work on
    a fresh connection may succeed."""


class Poisoned(Exception):
    """PostgreSQL refused what some record of the batch holds (a value out of a column's range, an id taken, an
    index row too large): the batch is bisected to find the record. `detail` is the database's error."""

    def __init__(self, error: BaseException) -> None:
        self.detail = f"{type(error).__name__}: {error}"
        super().__init__(self.detail)


async def translated(call: Awaitable[T]) -> T:
    """`call`, with the drivers' errors translated into the projector's own: `Transient`, `Poisoned`, or as
    they were (a bug, a broken invariant: the worker stops)."""
    try:
        return await call
    except Exception as e:
        if transient(e):
            raise Transient(repr(e)) from e
        if poison(e):
            raise Poisoned(e) from e
        raise


def transient(error: BaseException) -> bool:
    """Whether `error` is a fault of the surroundings, worth retrying; asyncpg's client-side `DataError` is
    an `InterfaceError` but says a value cannot be sent, which no retry changes."""
    if isinstance(error, asyncpg.exceptions._base.DataError):
        return False
    if isinstance(error, ProduceFailed):  # Kafka did not acknowledge the outcomes: retried, unless for good
        return error.retriable and not error.fatal
    return isinstance(error, (*TRANSIENT, asyncpg.InterfaceError))


def poison(error: BaseException) -> bool:
    """Whether `error` may come from the values of some record of the batch (then the batch is bisected)."""
    if isinstance(error, asyncpg.PostgresError):
        if getattr(error, "constraint_name", None) in INVARIANT_CONSTRAINTS:
            return False
        return str(error.sqlstate or "")[:2] in POISON_SQLSTATE_CLASSES
    # Encoding a value on our side: out of a column type's range, text that is not UTF-8.
    return isinstance(error, ValueError | OverflowError) and not transient(error)


def _columns(keys: Iterable[tuple[str, ...]], width: int) -> list[list[str]]:
    columns: list[list[str]] = [[] for _ in range(width)]
    for key in keys:
        for i in range(width):
            columns[i].append(key[i])
    return columns


def decided_from_row(row: asyncpg.Record) -> Decided:
    """What the ledger remembers of a stored transaction row."""
    return Decided(row["id"], row["status"], row["reason"], bytes(row["fingerprint"]),
                   Position(row["log_partition"], row["log_offset"]))


def _postings(raw: str) -> tuple[Posting, ...]:
    # A rejected request's `amount_max` postings are stored as given (no amount was ever moved).
    return tuple(Posting(p["source"], p["destination"], p["amount"] if "amount" in p else p["amount_max"], p["asset"])
                 for p in orjson.loads(raw))


def _ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def _track(ledger: Ledger, row: asyncpg.Record, keys: set[BalanceKey]) -> None:
    """Know a hold read from PostgreSQL, and add the balances it holds on to `keys` (to be loaded too)."""
    if (row["tenant"], row["id"]) in ledger.holds:  # carried: this process's own state is newer
        return
    hold = Hold(row["tenant"], row["id"], _postings(row["postings"]), _ms(row["expires_at"]),
                Position(row["log_partition"], row["log_offset"]), row["state"], row["closed_by"],
                None if row["closed_at"] is None else _ms(row["closed_at"]))
    ledger.track(hold)
    keys.update((hold.tenant, p.source, p.asset) for p in hold.postings)
    # Its destinations too: nothing of theirs is held, but a capture, void or expiry moves their version.
    keys.update((hold.tenant, p.destination, p.asset) for p in hold.postings)


async def preload(conn: asyncpg.Connection, needs: Needs, due: dict[int, int], ledger: Ledger) -> None:
    """Load into `ledger` what `needs` names at each of its steps (`ledger.plan`), and the open holds of the
    batch's partitions due by `due` (ms)."""
    batch_ids = needs.batch_ids(ledger)
    if batch_ids:
        for row in await conn.fetch(SELECT_BATCHES, *_columns(batch_ids, 2)):
            ledger.batches[(row["tenant"], row["id"])] = tuple(row["items"])
    wanted = needs.decided_ids(ledger)
    if wanted:
        for row in await conn.fetch(SELECT_BY_ID, *_columns(wanted, 2)):
            ledger.by_id[(row["tenant"], row["asked"])] = decided_from_row(row)
    held_keys: set[BalanceKey] = set()
    holds = needs.holds(ledger)
    if holds:
        for row in await conn.fetch(SELECT_HOLDS, *_columns(holds, 2)):
            _track(ledger, row, held_keys)
    if due:
        # A time out of range (only a topic whose times producers set lets one through) reaches every hold.
        until = EPOCH + timedelta(milliseconds=min(max(due.values()), DUE_MS_MAX))
        for row in await conn.fetch(SELECT_DUE_HOLDS, list(due), until):
            _track(ledger, row, held_keys)
    removed = needs.monitors(ledger)
    if removed:
        for row in await conn.fetch(SELECT_MONITORS, *_columns(removed, 2)):
            ledger.learn_monitor(Monitor(row["tenant"], row["id"], Watch(row["account"], row["asset"], row["below"],
                                                                         row["above"]), row["active"]))
    originals = needs.originals(ledger)
    if originals:
        for row in await conn.fetch(SELECT_ORIGINALS, *_columns(originals, 2)):
            ledger.originals[(row["tenant"], row["id"])] = Original(row["kind"], row["status"],
                                                                  _postings(row["postings"]), row["reversed"])
    # Every balance row the fold may write carries its account's limit: those of expiring holds too.
    moved = needs.moved(ledger, held_keys)
    accounts = needs.accounts(ledger, moved)
    if accounts:
        for row in await conn.fetch(SELECT_POLICIES, *_columns(accounts, 2)):
            if row["monitor"] is not None:
                ledger.learn_monitor(Monitor(row["tenant"], row["monitor"], Watch(
                    row["account"], row["asset"], row["below"], row["above"])))
                continue
            ledger.learn_policy((row["tenant"], row["account"]), Policy(
                orjson.loads(row["overdraft_limit"]), row["frozen"], orjson.loads(row["metadata"])))
            ledger.versions[(row["tenant"], row["account"])] = row["version"]
        for account in accounts:  # no row: no policy (remembered, so it is not asked again)
            ledger.policies.setdefault(account, NO_POLICY)
    keys = needs.balances(ledger, moved)
    if keys:
        for row in await conn.fetch(SELECT_BALANCES, *_columns(keys, 3)):
            key = (row["tenant"], row["account"], row["asset"])
            ledger.balances[key] = row["balance"]
            ledger.held[key] = row["held"]
            ledger.turnover[key] = (int(row["credits_total"]), row["entries_count"])
        for key in keys:  # no row yet: nothing posted, nothing held
            ledger.balances.setdefault(key, 0)
    idem = needs.keys(ledger)
    if idem:
        items: set[tuple[str, str]] = set()
        for row in await conn.fetch(SELECT_BY_KEY, *_columns(idem, 2)):
            ledger.by_key[(row["tenant"], row["key"])] = decided_from_row(row)
            if row["items"] is not None:  # a batch's key: a repeat replays its items, which must be known
                ledger.batches[(row["tenant"], row["id"])] = tuple(row["items"])
                items.update((row["tenant"], i) for i in row["items"] if (row["tenant"], i) not in ledger.by_id)
        if items:
            for row in await conn.fetch(SELECT_BY_ID, *_columns(items, 2)):
                ledger.by_id[(row["tenant"], row["asked"])] = decided_from_row(row)
    unchained = needs.unchained(ledger)
    if unchained:
        for row in await conn.fetch(SELECT_CHAINS, unchained):
            ledger.chains[row["tenant"]] = (row["count"], bytes(row["head"]).hex())
    unknown = needs.unknown_tenants(ledger)
    if unknown:
        rows = await conn.fetch(SELECT_TENANTS, unknown)
        found = {row["id"] for row in rows}
        ledger.tenants.update({t: t in found for t in unknown})
        ledger.monitor_counts.update({row["id"]: row["monitors"] for row in rows})


async def store(conn: asyncpg.Connection, rows: BatchRows, publish: Publish | None, notify: bool) -> None:
    """Write a batch's rows and offsets, then `publish` its outcomes (before the commit, so a crash in
    between publishes them again: at least once); `notify` the API when this is the live projection.

    Published only once PostgreSQL has taken every row (no constraint is deferred, so only a fault of the
    surroundings can fail the commit, and its redo publishes the same outcomes): a batch that PostgreSQL
    refuses, and that poison isolation then splits, never announced outcomes it did not keep."""
    await _write_rows(conn, rows, notify)
    if publish is not None:
        await publish(rows.outcomes)


async def _copy(conn: asyncpg.Connection, table: str, records: Sequence[tuple[object, ...]],
                columns: tuple[str, ...]) -> None:
    if records:
        await conn.copy_records_to_table(table, records=records, columns=columns)


async def _write_rows(conn: asyncpg.Connection, rows: BatchRows, notify: bool) -> None:
    await _copy(conn, "tenants", rows.tenants, TENANT_COLUMNS)
    await _copy(conn, "transactions", rows.transactions, TRANSACTION_COLUMNS)
    await _copy(conn, "entries", rows.entries, ENTRY_COLUMNS)
    await _copy(conn, "idempotency_keys", rows.idempotency_keys, IDEMPOTENCY_COLUMNS)
    await _copy(conn, "batches", rows.batches, BATCH_COLUMNS)
    if rows.chains:
        chains = list(rows.chains.items())
        await conn.execute(UPSERT_CHAINS, [t for t, _ in chains], [c.links for _, c in chains],
                           [bytes.fromhex(c.head) for _, c in chains], [c.position.partition for _, c in chains],
                           [c.position.offset for _, c in chains])
    await _copy(conn, "replays", rows.replays, REPLAY_COLUMNS)
    await _copy(conn, "invalid_events", rows.invalid_events, INVALID_EVENT_COLUMNS)
    await _copy(conn, "holds", list(rows.holds.values()), HOLD_COLUMNS)
    await _copy(conn, "monitors", rows.monitors, MONITOR_COLUMNS)
    if rows.monitor_removals:
        removals = rows.monitor_removals
        await conn.execute(UPDATE_MONITORS, [r.tenant for r in removals], [r.id for r in removals],
                           [r.removed_at for r in removals])
    if rows.accounts:
        await conn.execute(UPSERT_ACCOUNTS, *_columns(rows.accounts.values(), len(ACCOUNT_COLUMNS)))  # type: ignore
    if rows.versions:  # after the policies: a policy's row keeps its policy and takes its version
        versions = list(rows.versions.items())
        await conn.execute(UPSERT_VERSIONS, [k[0] for k, _ in versions], [k[1] for k, _ in versions],
                           [v.position.partition for _, v in versions], [v.position.offset for _, v in versions],
                           [v.updated_at for _, v in versions], [v.version for _, v in versions])
    if rows.hold_changes:
        changes = list(rows.hold_changes.items())
        await conn.execute(UPDATE_HOLDS, [k[0] for k, _ in changes], [k[1] for k, _ in changes],
                           [c.state for _, c in changes], [c.closed_by for _, c in changes],
                           [c.closed_at for _, c in changes])
    if rows.reversed:
        totals = list(rows.reversed.items())
        await conn.execute(UPDATE_REVERSED, [k[0] for k, _ in totals], [k[1] for k, _ in totals],
                           [v for _, v in totals])
    if rows.tenants and notify:
        await conn.execute(NOTIFY_TENANTS, KEYS_CHANNEL, [t[0] for t in rows.tenants])
    items = list(rows.balances.items())
    parts = sorted(rows.next_offsets)
    # The accounts whose balance rows or policy moved, then the offsets: the API's balance cache drops them
    # before its waiters for these offsets wake (a batch's notifications arrive together, in this order).
    # A rebuild's or a verification's schema notifies nothing: the API's progress is the live projection's.
    changed = {(k[0], k[1]) for k in rows.balances} | rows.accounts.keys() | rows.versions.keys()
    notices = payloads(rows.next_offsets, {account_key(t, a) for t, a in changed}) if notify else []
    await conn.execute(
        WRITE_TAIL,
        [k[0] for k, _ in items], [k[1] for k, _ in items], [k[2] for k, _ in items],
        [v.balance for _, v in items], [v.held for _, v in items], [v.overdraft_limit for _, v in items],
        [v.position.partition for _, v in items], [v.position.offset for _, v in items],
        [v.credits_total for _, v in items], [v.entries_count for _, v in items],
        OFFSETS_LOG, parts, [rows.next_offsets[p] for p in parts], PROGRESS_CHANNEL, notices)


def schema_path(schema: str) -> str:
    if not SCHEMA_RE.fullmatch(schema):
        raise ValueError(f"not a projection schema name: {schema!r}")
    return f"{schema}, public"


async def begin(conn: asyncpg.Connection, schema: str | None) -> str:
    """Point this transaction at the live projection (waiting while an operator switches it) or at `schema`;
    returns the schema it points at."""
    if schema is None:
        return str(await conn.fetchval("SELECT projector_begin()"))
    await conn.execute("SELECT set_config('search_path', $1, true)", schema_path(schema))
    return schema


async def open_batch(conn: asyncpg.Connection, partitions: list[int],
                     schema: str | None) -> tuple[dict[int, int], str]:
    """Point the transaction at the live projection (or `schema`) as `begin` does, and lock the offsets rows
    of `partitions`: (the next offset of each, the schema the transaction points at)."""
    if schema is not None:
        schema_path(schema)
    rows = await conn.fetch(OPEN_BATCH, OFFSETS_LOG, partitions, schema)
    return {r["log_partition"]: r["next_offset"] for r in rows}, rows[0]["projection"]


async def committed_offsets(conn: asyncpg.Connection, schema: str) -> dict[int, int]:
    """The next offset to apply of every partition the projection in `schema` has seen."""
    schema_path(schema)
    rows = await conn.fetch(f"SELECT log_partition, next_offset FROM {schema}.projection_offsets WHERE topic = $1",
                            OFFSETS_LOG)
    return {r["log_partition"]: r["next_offset"] for r in rows}
