"""The rows a batch's fold writes, one named type per table: the projector's COPY and upserts take their
column lists from these fields, so a row is never built or read by position."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from ledger.positions import Position


class TransactionRow(NamedTuple):
    tenant: str
    id: str
    status: str
    reason: str | None
    postings: str  # JSON
    metadata: str  # JSON
    reference: str | None
    idempotency_key: str | None
    fingerprint: bytes
    log_partition: int
    log_offset: int
    created_at: datetime
    committed_at: datetime | None
    error: str | None
    kind: str
    target: str | None
    chain_index: int | None
    hash: bytes | None
    previous_hash: bytes | None
    reversed: int


class EntryRow(NamedTuple):
    """One leg on one account, with the account's running credit total and entry number per asset after it (a
    statement of any period is two lookups a side)."""

    tenant: str
    account: str
    asset: str
    log_offset: int
    leg: int
    transaction_id: str
    amount: int
    balance_after: int
    committed_at: datetime
    credits_total: int
    entry_number: int


class IdempotencyRow(NamedTuple):
    tenant: str
    key: str
    transaction_id: str


class InvalidEventRow(NamedTuple):
    log_partition: int
    log_offset: int
    record_key: bytes | None
    record_value: bytes
    error: str
    logged_at: datetime


class ReplayRow(NamedTuple):
    tenant: str
    id: str
    original_id: str
    log_partition: int
    log_offset: int


class TenantRow(NamedTuple):
    id: str
    name: str
    log_partition: int
    log_offset: int
    created_at: datetime


class BatchRow(NamedTuple):
    tenant: str
    id: str
    idempotency_key: str
    fingerprint: bytes
    status: str
    reason: str | None
    atomic: bool
    items: list[str]
    log_partition: int
    log_offset: int
    created_at: datetime


class HoldRow(NamedTuple):
    tenant: str
    id: str
    state: str
    postings: str  # JSON
    expires_at: datetime
    log_partition: int
    log_offset: int
    created_at: datetime
    closed_by: str | None
    closed_at: datetime | None


class MonitorRow(NamedTuple):
    """A balance monitor, as its record created it (a removal sets `active` false and `removed_at`)."""

    tenant: str
    id: str
    account: str
    asset: str
    below: int | None
    above: int | None
    active: bool
    log_partition: int
    log_offset: int
    created_at: datetime


class AccountRow(NamedTuple):
    """An account's policy, as a policy record set it."""

    tenant: str
    account: str
    metadata: str  # JSON
    overdraft_limit: str  # JSON
    frozen: bool
    log_partition: int
    log_offset: int
    updated_at: datetime


# What a batch upserts into rows that exist already, keyed by the row's key in `BatchRows` (so each is written
# once per batch, as it ends the batch).


class BalanceChange(NamedTuple):
    """A balance row as the batch leaves it (keyed by tenant, account, asset)."""

    balance: int
    held: int
    overdraft_limit: int
    position: Position  # of the last request that changed it
    credits_total: int
    entries_count: int


class VersionChange(NamedTuple):
    """An account whose version moved (keyed by tenant, account)."""

    version: int
    position: Position  # of the last record that moved it
    updated_at: datetime


class HoldChange(NamedTuple):
    """A hold created before the batch and closed in it (keyed by tenant, id)."""

    state: str
    closed_by: str | None
    closed_at: datetime


class ChainHead(NamedTuple):
    """A tenant's chain as the batch leaves it (keyed by tenant)."""

    links: int  # how many transactions it links
    head: str  # hex
    position: Position  # of its last link


class MonitorRemoval(NamedTuple):
    tenant: str
    id: str
    removed_at: datetime


TRANSACTION_COLUMNS = TransactionRow._fields
# A balance row: its key, then a `BalanceChange` with its position as two columns.
BALANCE_COLUMNS = ("tenant", "account", "asset", "balance", "held", "overdraft_limit", "log_partition", "log_offset",
                   "credits_total", "entries_count")
ENTRY_COLUMNS = EntryRow._fields
IDEMPOTENCY_COLUMNS = IdempotencyRow._fields
INVALID_EVENT_COLUMNS = InvalidEventRow._fields
REPLAY_COLUMNS = ReplayRow._fields
TENANT_COLUMNS = TenantRow._fields
BATCH_COLUMNS = BatchRow._fields
HOLD_COLUMNS = HoldRow._fields
ACCOUNT_COLUMNS = AccountRow._fields
MONITOR_COLUMNS = MonitorRow._fields
