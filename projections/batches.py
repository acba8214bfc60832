"""Folding one batch of log records into rows: pure, so the writer only loads and stores.

`fold_batch` runs `ledger.decisions` over the records with the state the writer preloaded, and returns
every row to write and every outcome to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson

from ledger.codec import decode_request, salvage_identity
from ledger.decisions import IDEMPOTENCY_CONFLICT, INVALID, BalanceKey, Decided, Ledger, decide
from ledger.errors import InvalidRequest
from ledger.positions import Position
from ledger.requests import TransactionRequest
from ledger.validation import TENANT_RE

# For the processes that fold (the projector, `ledger replay`/`verify`): a fold allocates millions of
# short-lived acyclic tuples while the state it works on holds ~10^5 long-lived objects. With the default
# threshold (700) the collector re-scans those all the time, which measured here doubled decode and fold
# times. Reference counting frees the tuples; collections can be rare.
GC_THRESHOLDS = (50_000, 20, 100)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ERROR_LEN_MAX = 500
RAW_VALUE_BYTES_MAX = 64 * 1024


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


@dataclass(slots=True)
class BatchRows:
    """Everything one batch writes, in the column order of its table."""

    transactions: list[tuple[object, ...]] = field(default_factory=list)
    entries: list[tuple[object, ...]] = field(default_factory=list)
    idempotency_keys: list[tuple[object, ...]] = field(default_factory=list)
    invalid_events: list[tuple[object, ...]] = field(default_factory=list)
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


def _outcome(tenant: str | None, id: str | None, status: str, reason: str | None, position: Position,
             original_id: str | None = None) -> bytes:
    body: dict[str, object] = {"tenant": tenant, "id": id, "status": status, "reason": reason,
                               "position": position.token()}
    if original_id is not None:
        body["original_id"] = original_id
    return orjson.dumps(body)


def _count(rows: BatchRows, status: str, reason: str | None) -> None:
    rows.counts[(status, reason)] = rows.counts.get((status, reason), 0) + 1


def _fold_request(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, request: TransactionRequest) -> None:
    outcome = decide(ledger, request)
    position = record.position
    key = request.tenant.encode()
    if outcome.replay_of is not None:
        original = outcome.replay_of
        _count(rows, "replayed", outcome.reason)
        body = _outcome(request.tenant, request.id, outcome.status, outcome.reason, original.position,
                        original.transaction_id)
        rows.outcomes.append((position.partition, key, body))
        return
    ledger.apply(request, outcome, position)
    committed_at = at if outcome.status == "committed" else None
    rows.transactions.append((
        request.tenant, request.id, outcome.status, outcome.reason,
        orjson.dumps([p.as_json() for p in request.postings]).decode(),
        orjson.dumps(request.metadata).decode(), request.reference, request.idempotency_key,
        request.fingerprint(), position.partition, position.offset, at, committed_at, None,
    ))
    if request.idempotency_key is not None and outcome.reason != IDEMPOTENCY_CONFLICT:
        rows.idempotency_keys.append((request.tenant, request.idempotency_key, request.id))
    for entry in outcome.entries:
        rows.entries.append((request.tenant, entry.account, entry.asset, position.offset, entry.leg,
                             request.id, entry.amount, entry.balance_after, at))
        rows.balances[(request.tenant, entry.account, entry.asset)] = (entry.balance_after, position)
    _count(rows, outcome.status, outcome.reason)
    body = _outcome(request.tenant, request.id, outcome.status, outcome.reason, position)
    rows.outcomes.append((position.partition, key, body))


def _fold_invalid(ledger: Ledger, rows: BatchRows, record: Record, at: datetime, error: InvalidRequest) -> None:
    position = record.position
    message = error.message[:ERROR_LEN_MAX]
    identity = salvage_identity(record.key, record.value)
    _count(rows, "rejected", INVALID)
    if identity is not None and ledger.decided_id(*identity) is None:
        tenant, id = identity
        ledger.record_invalid(tenant, id, position)
        rows.transactions.append((tenant, id, "rejected", INVALID, "[]", "{}", None, None, b"",
                                  position.partition, position.offset, at, None, message))
        rows.outcomes.append((position.partition, tenant.encode(), _outcome(tenant, id, "rejected", INVALID, position)))
        return
    rows.invalid_events.append((position.partition, position.offset, record.key,
                                (record.value or b"")[:RAW_VALUE_BYTES_MAX], message, at))
    tenant = record.key.decode("utf-8", "replace") if record.key else None
    tenant = tenant if tenant is not None and TENANT_RE.fullmatch(tenant) else None
    body = _outcome(tenant, identity[1] if identity else None, "rejected", INVALID, position)
    rows.outcomes.append((position.partition, record.key or b"", body))


def decode_all(records: list[Record]) -> list[TransactionRequest | InvalidRequest]:
    decoded: list[TransactionRequest | InvalidRequest] = []
    for record in records:
        try:
            decoded.append(decode_request(record.key, record.value))
        except InvalidRequest as e:
            decoded.append(e)
    return decoded


def fold_batch(ledger: Ledger, records: list[Record], decoded: list[TransactionRequest | InvalidRequest],
               rows: BatchRows | None = None) -> BatchRows:
    """Decide every record in log order against `ledger` (preloaded with what they touch), adding to `rows`."""
    rows = rows if rows is not None else BatchRows()
    times: dict[int, datetime] = {}  # records appended in the same millisecond share one datetime
    for record, request in zip(records, decoded, strict=True):
        at = times.get(record.timestamp_ms)
        if at is None:
            at = times[record.timestamp_ms] = record.time
        if isinstance(request, InvalidRequest):
            _fold_invalid(ledger, rows, record, at, request)
        else:
            _fold_request(ledger, rows, record, at, request)
        rows.next_offsets[record.partition] = record.offset + 1
    return rows


def decided_from_row(row: dict[str, object]) -> Decided:
    """What the ledger remembers of a stored transaction row."""
    return Decided(str(row["id"]), row["status"], row["reason"], bytes(row["fingerprint"]),  # type: ignore[arg-type]
                   Position(int(row["log_partition"]), int(row["log_offset"])))  # type: ignore[call-overload]
