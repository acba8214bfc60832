"""What the ledger knows while it decides: the decided requests, holds, reversible transactions, policies
and monitors, an outcome, and `LedgerState`, the reads a decision makes of them (`ledger.memory` holds them
in memory, a batch at a time in the projector)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from ledger.positions import Position
from ledger.requests import (
    CaptureRequest,
    PolicyRequest,
    Posting,
    TransactionRequest,
    VoidRequest,
    Watch,
)

Status = Literal["committed", "rejected"]
BalanceKey = tuple[str, str, str]  # (tenant, account, asset)
HELD, CAPTURED, VOIDED, EXPIRED = "held", "captured", "voided", "expired"


class Entry(NamedTuple):
    """One leg of a posting on one account: `amount` is signed (negative = debit).

    A NamedTuple rather than a frozen dataclass: the projector makes millions, and a frozen dataclass's
    `__init__` costs a `object.__setattr__` per field.
    """

    account: str
    asset: str
    amount: int
    balance_after: int
    leg: int


class Decided(NamedTuple):
    """What the ledger remembers of a decided request, for idempotent replays (a NamedTuple: one per request)."""

    transaction_id: str
    status: Status
    reason: str | None
    fingerprint: bytes
    position: Position


@dataclass(slots=True)
class Hold:
    """A hold as the ledger tracks it: open (`held`) until captured, voided or expired, once."""

    tenant: str
    id: str
    postings: tuple[Posting, ...]
    expires_at_ms: int
    position: Position  # of the request that placed it
    state: str = HELD
    closed_by: str | None = None
    closed_at_ms: int | None = None


@dataclass(slots=True)
class Original:
    """What a reversal needs of the transaction it names: what it moved, and `reversed`: for one posting, the
    amount reversed so far; for several, reversed only whole and once, 1 once reversed. (Their amounts, per
    asset, are what the API shows as reversed; a sum of several could pass int64, which no column holds.)"""

    kind: str
    status: str
    postings: tuple[Posting, ...]
    reversed: int = 0

    @property
    def remaining(self) -> int:
        """For one posting, the amount not reversed yet; for several, 1 until they are reversed."""
        if len(self.postings) == 1:
            return self.postings[0].amount - self.reversed
        return 1 - self.reversed


@dataclass(slots=True)
class Policy:
    """An account's policy, as the last policy record on the log set it."""

    limits: dict[str, int]  # asset -> how far below zero its available balance may go
    frozen: bool
    metadata: dict[str, str]


NO_POLICY = Policy({}, False, {})


@dataclass(slots=True)
class Monitor:
    """A balance monitor (contract v3), active until a removal record closes it."""

    tenant: str
    id: str
    watch: Watch
    active: bool = True


class Outcome(NamedTuple):
    """The decision on one request (a NamedTuple: one per request).

    `replay_of` is set when the request repeats one already decided (same idempotency key or same id):
    nothing is applied and the original decision stands. `moved` are the postings a committed request
    moves (a capture's and a reversal's are derived from their target); `held` the new held amount of each
    balance it reserves or releases; `reversed` how much of its target a reversal reverses.
    """

    status: Status
    reason: str | None = None
    entries: tuple[Entry, ...] = ()
    replay_of: Decided | None = None
    moved: tuple[Posting, ...] = ()
    held: tuple[tuple[BalanceKey, int], ...] = ()
    reversed: int = 0
    target: str | None = None  # the hold or transaction acted on, a repeat's id resolved to its original


class LedgerState(Protocol):
    """What `decide` needs to read: balances, holds, earlier decisions and tenants."""

    def balance(self, key: BalanceKey) -> int: ...

    def held_of(self, key: BalanceKey) -> int: ...

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None: ...

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None: ...

    def tenant_exists(self, tenant: str) -> bool: ...

    def hold(self, tenant: str, hold_id: str) -> Hold | None: ...

    def original(self, tenant: str, transaction_id: str) -> Original | None: ...

    def policy(self, tenant: str, account: str) -> Policy: ...

    def restricted(self) -> bool: ...

    def version(self, tenant: str, account: str) -> int: ...

    def monitor(self, tenant: str, monitor_id: str) -> Monitor | None: ...

    def watching(self, tenant: str, account: str) -> tuple[Monitor, ...]: ...

    def monitor_count(self, tenant: str) -> int: ...


def changed_accounts(state: LedgerState, request: TransactionRequest, outcome: Outcome) -> set[str]:
    """The accounts whose `version` a decided request moves on (contract v3): those its postings, or its
    hold's, name with an amount, when it committed (an `amount_max` that found nothing changes nothing); a
    policy's account."""
    if outcome.status != "committed":
        return set()
    if isinstance(request, PolicyRequest):
        return {request.account}
    postings = outcome.moved
    if isinstance(request, CaptureRequest | VoidRequest):
        hold = state.hold(request.tenant, outcome.target or "")
        postings = hold.postings if hold is not None else postings
    return hold_accounts(postings)


def hold_accounts(postings: tuple[Posting, ...]) -> set[str]:
    """The accounts postings change: those they name with an amount."""
    return {account for p in postings if p.amount for account in (p.source, p.destination)}


def resolved(state: LedgerState, tenant: str, target: str) -> str:
    """The id `target` stands for: a repeat's id (it was handed out too) stands for its original."""
    decided = state.decided_id(tenant, target)
    return decided.transaction_id if decided is not None else target
