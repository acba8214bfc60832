"""Folding one batch of log records into rows to write and outcomes to publish: pure, so the projector only
loads state, hands a batch here once, and stores what comes back.

Every record is decided, whatever its bytes: a request by `ledger.decisions`; a record on the wrong
partition as `wrong_partition`; an unreadable one as `invalid`; and a record that PostgreSQL refused to store
(found by the projector's poison isolation, passed in as `poison`) as `invalid` with the database's error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson

from ledger.codec import decode_request, encode_outcome, salvage_identity
from ledger.decisions import (
    INVALID,
    WRONG_PARTITION,
    BalanceKey,
    Ledger,
    decide,
    decide_tenant,
)
from ledger.errors import InvalidRequest
from ledger.placement import partition_for
from ledger.positions import Position
from ledger.requests import TenantRequest, TransactionRequest
from ledger.validation import TENANT_RE, UNSTORABLE_RE

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ERROR_LEN_MAX = 500
RAW_VALUE_BYTES_MAX = 64 * 1024
# How a record PostgreSQL refused is recorded: first as a rejected transaction under its own tenant and id
# (so the id resolves), and if even that is refused, only in the operators' `invalid_events`.
POISON_AS_TRANSACTION = 1
POISON_AS_EVENT = 2


class Record(NamedTuple):
    """One record of `ledger.transactions` as the consumer delivered it (a NamedTuple: one per record)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)

    @property
    def time(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.timestamp_ms)


class Invalid(NamedTuple):
    """A record that is not a request: why, its (tenant, id) when readable, and the reason it is rejected
    with (`invalid` or `wrong_partition`)."""

    error: str
    identity: tuple[str, str] | None
    reason: str = INVALID


Decoded = TransactionRequest | TenantRequest | Invalid


@dataclass(slots=True)
class BatchRows:
    """Everything one batch writes, in the column order of its table."""

    transactions: list[tuple[object, ...]] = field(default_factory=list)
    entries: list[tuple[object, ...]] = field(default_factory=list)
    idempotency_keys: list[tuple[object, ...]] = field(default_factory=list)
    invalid_events: list[tuple[object, ...]] = field(default_factory=list)
    replays: list[tuple[object, ...]] = field(default_factory=list)
    tenants: list[tuple[object, ...]] = field(default_factory=list)
    balances: dict[BalanceKey, tuple[int, Position]] = field(default_factory=dict)
    # (partition, key, value): outcomes go to the partition of ledger.outcomes that matches the request's.
    outcomes: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    counts: dict[tuple[str, str | None], int] = field(default_factory=dict)


TRANSACTION_COLUMNS = ("tenant", "id", "status", "reason", "postings", "metadata", "reference",
                       "idempotency_key", "fingerprint", "log_partition", "log_offset", "created_at",
                       "committed_at", "error")
ENTRY_COLUMNS = ("tenant", "account", "asset", "log_offset", "leg", "transaction_id", "amount",
                 "balance_after", "committed_at")
IDEMPOTENCY_COLUMNS = ("tenant", "key", "transaction_id")
INVALID_EVENT_COLUMNS = ("log_partition", "log_offset", "record_key", "record_value", "error", "logged_at")
REPLAY_COLUMNS = ("tenant", "id", "original_id", "log_partition", "log_offset")
TENANT_COLUMNS = ("id", "name", "log_partition", "log_offset", "created_at")


def error_text(message: str) -> str:
    """An error message fit to store: bounded, and without what PostgreSQL's text refuses."""
    return UNSTORABLE_RE.sub("?", message[:ERROR_LEN_MAX])


def decode(record: Record, partitions: int) -> Decoded:
    """The request a record holds, or why it holds none. Placement first: a record off its tenant's
    partition is never read as that tenant's (another projector may own the tenant's partition)."""
    if record.key is not None and partition_for(record.key, partitions) != record.partition:
        return Invalid(f"the key's partition is {partition_for(record.key, partitions)}, not {record.partition}",
                       salvage_identity(record.key, record.value), WRONG_PARTITION)
    try:
        return decode_request(record.key, record.value)
    except InvalidRequest as e:
        return Invalid(e.message, salvage_identity(record.key, record.value))


def decode_all(records: list[Record], partitions: int) -> list[Decoded]:
    return [decode(record, partitions) for record in records]


def _count(rows: BatchRows, status: str, reason: str | None) -> None:
    rows.counts[(status, reason)] = rows.counts.get((status, reason), 0) + 1


def _publish(rows: BatchRows, record: Record, tenant: str | None, id: str | None, status: str,
             reason: str | None, position: Position | None = None, original_id: str | None = None) -> None:
    _count(rows, status, reason)
    body = encode_outcome(tenant, id, status, reason, position or record.position, record.position, original_id)
    rows.outcomes.append((record.partition, tenant.encode() if tenant else record.key or b"", body))


def _fold_request(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, request: TransactionRequest) -> None:
    outcome = decide(ledger, request)
    position = record.position
    if outcome.replay_of is not None:
        original = outcome.replay_of
        if ledger.remember_replay(request, original):
            rows.replays.append((request.tenant, request.id, original.transaction_id, position.partition,
                                 position.offset))
        _publish(rows, record, request.tenant, request.id, outcome.status, outcome.reason, original.position,
                 original.transaction_id)
        return
    binds_key = ledger.apply(request, outcome, position)
    committed_at = at if outcome.status == "committed" else None
    rows.transactions.append((
        request.tenant, request.id, outcome.status, outcome.reason,
        orjson.dumps([p.as_json() for p in request.postings]).decode(),
        orjson.dumps(request.metadata).decode(), request.reference, request.idempotency_key,
        request.fingerprint(), position.partition, position.offset, at, committed_at, None,
    ))
    if binds_key:
        rows.idempotency_keys.append((request.tenant, request.idempotency_key, request.id))
    for entry in outcome.entries:
        rows.entries.append((request.tenant, entry.account, entry.asset, position.offset, entry.leg,
                             request.id, entry.amount, entry.balance_after, at))
        rows.balances[(request.tenant, entry.account, entry.asset)] = (entry.balance_after, position)
    _publish(rows, record, request.tenant, request.id, outcome.status, outcome.reason)


def _fold_tenant(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, request: TenantRequest) -> None:
    outcome = decide_tenant(ledger, request)
    ledger.apply_tenant(request, outcome)
    if outcome.status == "committed":
        rows.tenants.append((request.tenant, request.name, record.partition, record.offset, at))
    _publish(rows, record, request.tenant, request.id, outcome.status, outcome.reason)


def _fold_invalid(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, invalid: Invalid) -> None:
    message = error_text(invalid.error)
    # A misplaced record is never written under its tenant: that tenant's rows belong to its own partition.
    if invalid.reason == INVALID and invalid.identity is not None and ledger.decided_id(*invalid.identity) is None:
        owner, id = invalid.identity
        ledger.record_invalid(owner, id, record.position)
        rows.transactions.append((owner, id, "rejected", invalid.reason, "[]", "{}", None, None, b"",
                                  record.partition, record.offset, at, None, message))
        _publish(rows, record, owner, id, "rejected", invalid.reason)
        return
    rows.invalid_events.append((record.partition, record.offset, record.key,
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

    `poison` names records PostgreSQL refused, with the isolation level and the database's error."""
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
        if isinstance(item, Invalid):
            _fold_invalid(ledger, rows, record, at, item)
        elif isinstance(item, TenantRequest):
            _fold_tenant(ledger, rows, record, at, item)
        else:
            _fold_request(ledger, rows, record, at, item)
        rows.next_offsets[record.partition] = record.offset + 1
    return rows
