"""Folding one batch of log records into rows to write and outcomes to publish: pure, so the projector only
loads state, hands a batch here once, and stores what comes back.

Every record is decided, whatever its bytes: a request by `ledger.decisions`; a record on the wrong
partition as `wrong_partition`; an unreadable one as `invalid`; and a record that PostgreSQL refused to store
(found by the projector's poison isolation, passed in as `poison`) as `invalid` with the database's error.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_never

import orjson

from ledger.batch import EPOCH, BatchRows, Decoded, Invalid, Record, error_text
from ledger.chain import CHAINED_KINDS, canonical, timestamp_text
from ledger.codec import encode_outcome
from ledger.decisions import batch_replay, decide, decide_tenant, first_failure, touched
from ledger.memory import Ledger
from ledger.positions import Position
from ledger.reasons import INVALID, KEY_UNBOUND
from ledger.requests import (
    HOLD,
    TRANSFER,
    BatchRequest,
    CaptureRequest,
    HoldRequest,
    MonitorRequest,
    PolicyRequest,
    ReverseRequest,
    TenantRequest,
    Tick,
    TransactionRequest,
    TransferRequest,
    UnmonitorRequest,
    VoidRequest,
    target_of,
)
from ledger.rows import (
    AccountRow,
    BalanceChange,
    BatchRow,
    ChainHead,
    EntryRow,
    HoldChange,
    HoldRow,
    IdempotencyRow,
    InvalidEventRow,
    MonitorRemoval,
    MonitorRow,
    ReplayRow,
    TenantRow,
    TransactionRow,
    VersionChange,
)
from ledger.state import EXPIRED, HELD, BalanceKey, Hold, Monitor, Outcome, changed_accounts, hold_accounts
from ledger.validation import POSTINGS_MAX, TENANT_RE

RAW_VALUE_BYTES_MAX = 64 * 1024
# How a record PostgreSQL refused is recorded: first as a rejected transaction under its own tenant and id
# (so the id resolves), and if even that is refused, only in the operators' `invalid_events`.
POISON_AS_TRANSACTION = 1
POISON_AS_EVENT = 2
LEGS_PER_ITEM = 2 * POSTINGS_MAX  # an atomic batch's item takes this many legs of its record's entries


def _hex(digest: str | None) -> bytes | None:
    """A hash as stored: its 32 bytes."""
    return None if digest is None else bytes.fromhex(digest)


def _count(rows: BatchRows, status: str, reason: str | None) -> None:
    rows.counts[(status, reason)] = rows.counts.get((status, reason), 0) + 1


def _publish(rows: BatchRows, record: Record, tenant: str | None, id: str | None, status: str,
             reason: str | None, position: Position | None = None, original_id: str | None = None,
             record_position: Position | None = None, kind: str | None = None,
             crossings: list[dict[str, object]] | None = None) -> None:
    _count(rows, status, reason)
    if rows.positions is None:
        return
    if position is None or record_position is None:
        here = record.position
        position, record_position = position or here, record_position or here
    body = encode_outcome(rows.positions, tenant, id, status, reason, position, record_position, original_id,
                          kind, crossings)
    rows.outcomes.append((record.partition, tenant.encode() if tenant else record.key or b"", body))


def _balance(ledger: Ledger, rows: BatchRows, key: BalanceKey, position: Position) -> None:
    limit = ledger.policy(key[0], key[1]).limits.get(key[2], 0)
    credits, count = ledger.turnover.get(key, (0, 0))
    rows.balances[key] = BalanceChange(ledger.balance(key), ledger.held_of(key), limit, position, credits, count)


def _close_hold(rows: BatchRows, hold: Hold, at: datetime) -> None:
    key = (hold.tenant, hold.id)
    if key in rows.holds:
        rows.holds[key] = rows.holds[key]._replace(state=hold.state, closed_by=hold.closed_by, closed_at=at)
    else:
        rows.hold_changes[key] = HoldChange(hold.state, hold.closed_by, at)


def _expire(ledger: Ledger, rows: BatchRows, record: Record) -> None:
    """Time passes first: the holds of this partition whose time came by this record's time expire."""
    for hold in ledger.expire(record.partition, record.timestamp_ms):
        at = EPOCH + timedelta(milliseconds=hold.expires_at_ms)
        _close_hold(rows, hold, at)
        _versions(ledger, rows, hold.tenant, hold_accounts(hold.postings), record.position, at)
        for p in hold.postings:
            _balance(ledger, rows, (hold.tenant, p.source, p.asset), record.position)
        # Answers no record of its own: it names the hold's, so no other record's outcome is mistaken for it.
        _publish(rows, record, hold.tenant, hold.id, EXPIRED, None, hold.position, record_position=hold.position,
                 kind=HOLD)


def _versions(ledger: Ledger, rows: BatchRows, tenant: str, accounts: set[str], position: Position,
              at: datetime) -> None:
    for account in accounts:
        rows.versions[(tenant, account)] = VersionChange(ledger.version(tenant, account), position, at)


def _effects(ledger: Ledger, rows: BatchRows, request: TransactionRequest, outcome: Outcome, position: Position,
             at: datetime, limited: set[BalanceKey]) -> None:
    """The rows a committed hold, capture, void or reversal changes besides its own."""
    match request:
        case TransferRequest():
            pass  # its entries and balances are written with every transaction's
        case HoldRequest():
            reserved = ledger.holds[(request.tenant, request.id)].postings  # `amount_max` resolved
            rows.holds[(request.tenant, request.id)] = HoldRow(
                request.tenant, request.id, HELD, orjson.dumps([p.as_json() for p in reserved]).decode(),
                EPOCH + timedelta(milliseconds=ledger.holds[(request.tenant, request.id)].expires_at_ms),
                position.partition, position.offset, at, None, None)
        case CaptureRequest() | VoidRequest():
            _close_hold(rows, ledger.holds[(request.tenant, outcome.target or "")], at)
        case PolicyRequest():
            limits = orjson.dumps(dict(request.limits)).decode()
            rows.accounts[(request.tenant, request.account)] = AccountRow(
                request.tenant, request.account, orjson.dumps(request.metadata).decode(), limits, request.frozen,
                position.partition, position.offset, at)
            for key in limited:  # every balance row that carries one of its limits, before or now
                _balance(ledger, rows, key, position)
        case MonitorRequest():
            w = request.watch
            rows.monitors.append(MonitorRow(request.tenant, request.id, w.account, w.asset, w.below, w.above, True,
                                            position.partition, position.offset, at))
        case UnmonitorRequest():
            rows.monitor_removals.append(MonitorRemoval(request.tenant, outcome.target or "", at))
        case ReverseRequest():
            target = (request.tenant, outcome.target or "")
            total = ledger.originals[target].reversed
            if target in rows.transaction_at:
                at_index = rows.transaction_at[target]
                rows.transactions[at_index] = rows.transactions[at_index]._replace(reversed=total)
            else:
                rows.reversed[target] = total
        case _:
            assert_never(request)


def _shown(request: TransactionRequest, outcome: Outcome) -> list[dict[str, object]]:
    """The postings a transaction's row shows: what a capture or reversal moved (derived from its target); a
    transfer's or hold's as given, or for a committed `amount_max` what it moved; none for the other kinds."""
    match request:
        case CaptureRequest() | ReverseRequest():
            return [p.as_json() for p in outcome.moved]
        case TransferRequest() | HoldRequest():
            if outcome.status == "committed" and request.amount_max:
                return [p.as_json() for p in outcome.moved]
            return request.postings_json()
        case VoidRequest() | PolicyRequest() | MonitorRequest() | UnmonitorRequest():
            return []
        case _:
            assert_never(request)


def _fold_request(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, request: TransactionRequest,
                  forced: Outcome | None = None, leg_base: int = 0) -> None:
    outcome = forced or decide(ledger, request, record.timestamp_ms)
    position = record.position
    if outcome.replay_of is not None:
        original = outcome.replay_of
        if ledger.remember_replay(request, original):
            rows.replays.append(ReplayRow(request.tenant, request.id, original.transaction_id, position.partition,
                                          position.offset))
        _publish(rows, record, request.tenant, request.id, outcome.status, outcome.reason, original.position,
                 original.transaction_id, kind=request.kind)
        return
    # A policy's balance rows are those of its new limits and of the ones it replaces: known before it applies.
    limited = touched([request], ledger) if isinstance(request, PolicyRequest) else set()
    versioned = changed_accounts(ledger, request, outcome)  # before it applies: a capture's hold is still open
    binds_key = ledger.apply(request, outcome, position, record.timestamp_ms)
    committed = outcome.status == "committed"
    postings = _shown(request, outcome)
    rows.transaction_at[(request.tenant, request.id)] = len(rows.transactions)
    index, hashed, previous = None, None, None
    if committed and request.kind in CHAINED_KINDS:
        index, hashed, previous = ledger.extend_chain(request.tenant, canonical(
            request.id, postings, request.metadata, request.reference, timestamp_text(at)))
        rows.chains[request.tenant] = ChainHead(index, hashed, position)
    rows.transactions.append(TransactionRow(
        request.tenant, request.id, outcome.status, outcome.reason, orjson.dumps(postings).decode(),
        orjson.dumps(request.metadata).decode(), request.reference, request.idempotency_key,
        request.fingerprint(), position.partition, position.offset, at, at if committed else None, None,
        request.kind, outcome.target or target_of(request), index, _hex(hashed), _hex(previous), 0,
    ))
    if committed:
        _effects(ledger, rows, request, outcome, position, at, limited)
        _versions(ledger, rows, request.tenant, versioned, position, at)
    if binds_key:
        assert request.idempotency_key is not None  # only a keyed request binds one
        rows.idempotency_keys.append(IdempotencyRow(request.tenant, request.idempotency_key, request.id))
    changed: dict[BalanceKey, None] = {}  # each balance row once, however many legs moved it
    for entry in outcome.entries:
        key = (request.tenant, entry.account, entry.asset)
        credits, number = ledger.count_entry(key, entry.amount)
        rows.entries.append(EntryRow(request.tenant, entry.account, entry.asset, position.offset,
                                     leg_base + entry.leg, request.id, entry.amount, entry.balance_after, at,
                                     credits, number))
        changed[key] = None
    for key, _ in outcome.held:
        changed[key] = None
    for key in changed:
        _balance(ledger, rows, key, position)
    crossed = _crossed(ledger, request, outcome) if ledger.watched and outcome.entries else None
    _publish(rows, record, request.tenant, request.id, outcome.status, outcome.reason, position, None, position,
             request.kind, crossed)


def _crossed(ledger: Ledger, request: TransactionRequest, outcome: Outcome) -> list[dict[str, object]]:
    """The balance monitors a committed transaction crossed (contract v3's `balance.crossed`): its posted
    balance went from `>= below` to `< below`, or from `<= above` to `> above`, between before the transaction
    and after it. Decided here, from the log alone, so a replay finds the same crossings."""
    spans: dict[tuple[str, str], list[int]] = {}  # (account, asset) -> [before, after], in the entries' order
    for entry in outcome.entries:
        span = spans.get((entry.account, entry.asset))
        if span is None:
            spans[(entry.account, entry.asset)] = [entry.balance_after - entry.amount, entry.balance_after]
        else:
            span[1] = entry.balance_after
    crossed: list[dict[str, object]] = []
    for (account, asset), (before, after) in spans.items():
        for monitor in ledger.watching(request.tenant, account):
            crossed.extend(_crossing(monitor, asset, before, after, request.id))
    return crossed


def _crossing(monitor: Monitor, asset: str, before: int, after: int, transaction_id: str) -> list[dict[str, object]]:
    watch = monitor.watch
    if watch.asset != asset:
        return []
    found: list[tuple[str, int]] = []
    if watch.below is not None and before >= watch.below > after:
        found.append(("below", watch.below))
    if watch.above is not None and before <= watch.above < after:
        found.append(("above", watch.above))
    return [{"monitor": monitor.id, "account": watch.account, "asset": asset, "balance": after, "threshold": limit,
             "direction": direction, "transaction_id": transaction_id} for direction, limit in found]


def _fold_batch_request(ledger: Ledger, rows: BatchRows, record: Record, at: datetime,
                        batch: BatchRequest) -> None:
    """All of an atomic batch's transfers commit, each as it would alone; or none does, and each is recorded
    rejected with the reason of the first that failed (a repeat of an earlier request stays a repeat). A
    batch that is not atomic decides each on its own, in order. A batch's idempotency key binds it whole:
    a repeat replays each item, or with another body is refused (`idempotency_conflict`) item by item."""
    key = batch.idempotency_key
    if key is not None and (batch.tenant, batch.id) in ledger.batches:
        # Its id is a batch's already: the record cannot be kept under it (nothing of it is applied).
        _fold_invalid(ledger, rows, record, at, Invalid(f"batch id {batch.id!r} is taken", None))
        return
    prior = ledger.decided_key(batch.tenant, key) if key is not None else None
    if prior is not None:
        originals = ledger.repeated_items(batch, prior)  # once per record: a fingerprint reads every item
        for index, item in enumerate(batch.items):
            outcome = batch_replay(ledger, item, None if originals is None else originals[index])
            _fold_request(ledger, rows, record, at, item, forced=outcome, leg_base=index * LEGS_PER_ITEM)
        return
    reason = first_failure(ledger, batch.items, record.timestamp_ms, record.position) if batch.atomic else None
    _fold_batch_items(ledger, rows, record, at, batch, reason)
    # Bound as a request's key would be: not by a batch that misused a key of its own items, nor by a tenant
    # that does not exist.
    if key is not None and ledger.tenant_exists(batch.tenant) and reason not in KEY_UNBOUND:
        decided = ledger.bind_batch(batch, "committed" if reason is None else "rejected", reason, record.position)
        rows.batches.append(BatchRow(batch.tenant, batch.id, key, decided.fingerprint, decided.status, reason,
                                     batch.atomic, [i.id for i in batch.items], record.partition, record.offset,
                                     at))


def _fold_batch_items(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, batch: BatchRequest,
                      reason: str | None) -> None:
    for index, item in enumerate(batch.items):
        # The items share the record's offset: their entries' legs are kept apart by the item's place.
        legs = index * LEGS_PER_ITEM
        if reason is None or ledger.decided_id(item.tenant, item.id) is not None \
                or (item.idempotency_key is not None and ledger.decided_key(item.tenant, item.idempotency_key)):
            _fold_request(ledger, rows, record, at, item, leg_base=legs)
        else:
            _fold_request(ledger, rows, record, at, item, forced=Outcome("rejected", reason), leg_base=legs)


def _fold_tenant(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, request: TenantRequest) -> None:
    outcome = decide_tenant(ledger, request)
    ledger.apply_tenant(request, outcome)
    if outcome.status == "committed":
        rows.tenants.append(TenantRow(request.tenant, request.name, record.partition, record.offset, at))
    _publish(rows, record, request.tenant, request.id, outcome.status, outcome.reason)


def _fold_invalid(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, invalid: Invalid) -> None:
    message = error_text(invalid.error)
    # A misplaced record is never written under its tenant: that tenant's rows belong to its own partition.
    if invalid.reason == INVALID and invalid.identity is not None and ledger.decided_id(*invalid.identity) is None:
        owner, id = invalid.identity
        ledger.record_invalid(owner, id, record.position)
        rows.transactions.append(TransactionRow(owner, id, "rejected", invalid.reason, "[]", "{}", None, None, b"",
                                                record.partition, record.offset, at, None, message, TRANSFER, None,
                                                None, None, None, 0))
        _publish(rows, record, owner, id, "rejected", invalid.reason)
        return
    rows.invalid_events.append(InvalidEventRow(record.partition, record.offset, record.key,
                                               (record.value or b"")[:RAW_VALUE_BYTES_MAX], message, at))
    readable = record.key.decode("utf-8", "replace") if record.key else ""
    tenant = readable if TENANT_RE.fullmatch(readable) else None
    _publish(rows, record, tenant, invalid.identity[1] if invalid.identity else None, "rejected", invalid.reason)


def _poisoned(item: Decoded, level: int, error: str) -> Invalid:
    """What a record PostgreSQL refused is decided as, at `level` of the isolation."""
    if isinstance(item, Invalid):
        identity = item.identity if item.reason == INVALID else None
    else:
        identity = (item.tenant, item.id) if isinstance(item, TransactionRequest) else None
    message = f"refused by the database: {error}"
    return Invalid(message, identity if level == POISON_AS_TRANSACTION else None)


def fold_batch(ledger: Ledger, records: list[Record], decoded: list[Decoded], rows: BatchRows | None = None,
               poison: dict[Position, tuple[int, str]] | None = None) -> BatchRows:
    """Decide every record in log order against `ledger` (preloaded with what they touch), adding to `rows`.

    `poison` names records PostgreSQL refused, with the isolation level and the database's error. Outcomes are
    encoded only with `rows.positions` (the key their tokens are sealed with)."""
    rows = rows if rows is not None else BatchRows()
    times: dict[int, datetime] = {}  # records appended in the same millisecond share one datetime
    for record, item in zip(records, decoded, strict=True):
        at = times.get(record.timestamp_ms)
        if at is None:
            try:
                at = times[record.timestamp_ms] = record.time
            except OverflowError:  # only a topic with producer-set times (CreateTime) lets one through
                at, item = EPOCH, Invalid(f"timestamp {record.timestamp_ms} ms is out of range", None)
        if poison and record.position in poison:
            item = _poisoned(item, *poison[record.position])
        _expire(ledger, rows, record)
        if isinstance(item, Tick):
            pass  # the clock: its time, just taken into account, is all it carries
        elif isinstance(item, Invalid):
            _fold_invalid(ledger, rows, record, at, item)
        elif isinstance(item, TenantRequest):
            _fold_tenant(ledger, rows, record, at, item)
        elif isinstance(item, BatchRequest):
            _fold_batch_request(ledger, rows, record, at, item)
        else:
            _fold_request(ledger, rows, record, at, item)
        rows.next_offsets[record.partition] = record.offset + 1
    return rows
