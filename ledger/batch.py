"""One batch of `ledger.transactions` as the consumer delivered it: its records, what each holds (`decode`:
a request, or why none), and the rows its fold writes (`BatchRows`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from ledger.codec import decode_request, salvage_identity
from ledger.errors import InvalidRequest
from ledger.placement import partition_for
from ledger.positions import Position, PositionKey
from ledger.reasons import INVALID, WRONG_PARTITION
from ledger.requests import BatchRequest, TenantRequest, Tick, TransactionRequest
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
from ledger.state import BalanceKey
from ledger.validation import UNSTORABLE_RE

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The Kafka header the API puts on a record whose client waits (`wait=true`): the projector then sends its answer.
ANSWER_HEADER = "ledger-answer"
ERROR_LEN_MAX = 500


class Record(NamedTuple):
    """One record of `ledger.transactions` as the consumer delivered it (a NamedTuple: one per record)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    # Its producer (the API) waits for its answer: the live projector sends it with the batch's notification.
    answer: bool = False

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


Decoded = TransactionRequest | TenantRequest | Tick | BatchRequest | Invalid


@dataclass(slots=True)
class BatchRows:
    """Everything one batch writes, in the column order of its table.

    `positions` seals the positions that outcomes carry; without it outcomes are counted, not encoded: a fold
    whose outcomes nobody publishes (replay, verification) needs no key."""

    positions: PositionKey | None = None
    transactions: list[TransactionRow] = field(default_factory=list)
    entries: list[EntryRow] = field(default_factory=list)
    idempotency_keys: list[IdempotencyRow] = field(default_factory=list)
    invalid_events: list[InvalidEventRow] = field(default_factory=list)
    replays: list[ReplayRow] = field(default_factory=list)
    tenants: list[TenantRow] = field(default_factory=list)
    batches: list[BatchRow] = field(default_factory=list)  # those that bound an idempotency key
    chains: dict[str, ChainHead] = field(default_factory=dict)
    # Holds created by this batch (their row as it ends the batch), and changes to holds created before.
    holds: dict[tuple[str, str], HoldRow] = field(default_factory=dict)
    hold_changes: dict[tuple[str, str], HoldChange] = field(default_factory=dict)
    # How much of a transaction written before this batch is reversed now (one created here is patched).
    reversed: dict[tuple[str, str], int] = field(default_factory=dict)
    transaction_at: dict[tuple[str, str], int] = field(default_factory=dict)  # index in `transactions`
    balances: dict[BalanceKey, BalanceChange] = field(default_factory=dict)
    accounts: dict[tuple[str, str], AccountRow] = field(default_factory=dict)  # policies set
    versions: dict[tuple[str, str], VersionChange] = field(default_factory=dict)
    # Balance monitors created, then those removed (tenant, id, when): a removal is written after the creations,
    # so one created and removed in the same batch is both.
    monitors: list[MonitorRow] = field(default_factory=list)
    monitor_removals: list[MonitorRemoval] = field(default_factory=list)
    # (partition, key, value): outcomes go to the partition of ledger.outcomes that matches the request's.
    outcomes: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    # (partition, offset, sealed JSON): the answers to waited transfers, sent with the batch's notifications.
    answers: list[tuple[int, int, str]] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    counts: dict[tuple[str, str | None], int] = field(default_factory=dict)


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
