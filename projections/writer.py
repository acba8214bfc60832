"""The projector's SQL adapter: load the state a batch needs, store what its fold produced, and open each
batch's transaction with its partitions' offsets locked. Set-based SQL only: a few statements per batch,
whatever its size. Its SQL is `projections.statements`; the drivers' errors are translated by
`projections.faults` into the projector's own, nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta

import asyncpg
import orjson

from infra.settings import KEYS_CHANNEL, PROGRESS_CHANNEL
from ledger.batch import EPOCH, BatchRows
from ledger.changes import account_key, payloads
from ledger.memory import Ledger
from ledger.plan import Needs
from ledger.positions import Position
from ledger.requests import (
    Posting,
    Watch,
)
from ledger.rows import (
    ACCOUNT_COLUMNS,
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
from projections.statements import (
    NOTIFY_TENANTS,
    OPEN_BATCH,
    SELECT_BALANCES,
    SELECT_BATCHES,
    SELECT_BY_ID,
    SELECT_BY_KEY,
    SELECT_CHAINS,
    SELECT_DUE_HOLDS,
    SELECT_HOLDS,
    SELECT_MONITORS,
    SELECT_ORIGINALS,
    SELECT_POLICIES,
    SELECT_TENANTS,
    UPDATE_HOLDS,
    UPDATE_MONITORS,
    UPDATE_REVERSED,
    UPSERT_ACCOUNTS,
    UPSERT_CHAINS,
    UPSERT_VERSIONS,
    WRITE_TAIL,
)

SCHEMA_RE = re.compile(r"(proj|verify)_[a-z0-9_]{1,40}", re.ASCII)
# The log an offsets row counts in: the contract's name of the transactions topic, whatever the deployment
# calls its topic (the API's `api_offsets()` reads the same name).
OFFSETS_LOG = "ledger.transactions"

DUE_MS_MAX = 253_402_300_799_000  # 9999-12-31T23:59:59Z, the last instant Python's datetime holds

Publish = Callable[[list[tuple[int, bytes, bytes]]], Awaitable[None]]

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
    notices = payloads(rows.next_offsets, {account_key(t, a) for t, a in changed}, rows.answers) if notify else []
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
