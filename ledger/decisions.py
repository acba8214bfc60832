"""The deterministic decision: what a request does to the ledger, from the log alone.

`decide(state, request)` validates a request against the state and returns an `Outcome`; `Ledger.apply`
folds an outcome into the state and only asserts, never re-validates, so replaying a log is a fold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from ledger.positions import Position
from ledger.requests import TenantRequest, TransactionRequest
from ledger.validation import BALANCE_MAX, BALANCE_MIN, is_system

Status = Literal["committed", "rejected"]
BalanceKey = tuple[str, str, str]  # (tenant, account, asset)

INSUFFICIENT_FUNDS = "insufficient_funds"
OVERFLOW = "overflow"
IDEMPOTENCY_CONFLICT = "idempotency_conflict"
INVALID = "invalid"
UNKNOWN_TENANT = "unknown_tenant"
WRONG_PARTITION = "wrong_partition"
TENANT_EXISTS = "already_exists"
# A key binds the first request that used it, whatever its outcome, except these: a conflict is the key's
# misuse, and a tenant that does not exist has no keys to bind.
KEY_UNBOUND = frozenset({IDEMPOTENCY_CONFLICT, UNKNOWN_TENANT})


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


class Outcome(NamedTuple):
    """The decision on one request (a NamedTuple: one per request).

    `replay_of` is set when the request repeats one already decided (same idempotency key or same id):
    nothing is applied and the original decision stands.
    """

    status: Status
    reason: str | None = None
    entries: tuple[Entry, ...] = ()
    replay_of: Decided | None = None


class LedgerState(Protocol):
    """What `decide` needs to read: balances and earlier decisions."""

    def balance(self, key: BalanceKey) -> int: ...

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None: ...

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None: ...

    def tenant_exists(self, tenant: str) -> bool: ...


def _replay(prior: Decided, request: TransactionRequest, id_taken: bool) -> Outcome:
    if prior.fingerprint == request.fingerprint():
        return Outcome(prior.status, prior.reason, replay_of=prior)
    if not id_taken:
        # A new request reusing a key: recorded under its own id, the key stays with the original.
        return Outcome("rejected", IDEMPOTENCY_CONFLICT)
    # Its id is taken (by a decided request, or by a repeat of one): nothing can be recorded under it.
    return Outcome("rejected", IDEMPOTENCY_CONFLICT, replay_of=prior)


def _legs(state: LedgerState, request: TransactionRequest) -> tuple[list[Entry], dict[BalanceKey, int]]:
    running: dict[BalanceKey, int] = {}
    entries: list[Entry] = []
    for index, posting in enumerate(request.postings):
        for side, account, amount in ((0, posting.source, -posting.amount), (1, posting.destination, posting.amount)):
            key = (request.tenant, account, posting.asset)
            after = (running[key] if key in running else state.balance(key)) + amount
            running[key] = after
            entries.append(Entry(account, posting.asset, amount, after, index * 2 + side))
    return entries, running


def decide(state: LedgerState, request: TransactionRequest) -> Outcome:
    """Decide `request` by the contract's rules, in order: idempotency, the tenant, overflow, funds."""
    prior = state.decided_id(request.tenant, request.id)
    if prior is not None:
        return _replay(prior, request, id_taken=True)
    if request.idempotency_key is not None:
        prior = state.decided_key(request.tenant, request.idempotency_key)
        if prior is not None:
            return _replay(prior, request, id_taken=False)
    if not state.tenant_exists(request.tenant):
        return Outcome("rejected", UNKNOWN_TENANT)
    entries, finals = _legs(state, request)
    # Any running balance must fit int64: entries store balance_after as a bigint.
    if any(not BALANCE_MIN <= e.balance_after <= BALANCE_MAX for e in entries):
        return Outcome("rejected", OVERFLOW)
    if any(balance < 0 and not is_system(account) for (_, account, _), balance in finals.items()):
        return Outcome("rejected", INSUFFICIENT_FUNDS)
    return Outcome("committed", entries=tuple(entries))


def decide_tenant(state: LedgerState, request: TenantRequest) -> Outcome:
    """A tenant is created once; creating it again is rejected and changes nothing."""
    if state.tenant_exists(request.tenant):
        return Outcome("rejected", TENANT_EXISTS)
    return Outcome("committed")


@dataclass(slots=True)
class Ledger:
    """An in-memory ledger state: the pure fold of a log, and the projector's working set for a batch.

    A key absent from `balances` holds zero; `decided_*` absent means never decided. The projector preloads
    every key a batch touches, so the same fold runs over a partial view of PostgreSQL.
    """

    balances: dict[BalanceKey, int] = field(default_factory=dict)
    by_key: dict[tuple[str, str], Decided] = field(default_factory=dict)
    by_id: dict[tuple[str, str], Decided] = field(default_factory=dict)
    # Whether each tenant exists (False: looked up, absent), for the tenants a batch names.
    tenants: dict[str, bool] = field(default_factory=dict)

    def balance(self, key: BalanceKey) -> int:
        return self.balances.get(key, 0)

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None:
        return self.by_key.get((tenant, idempotency_key))

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None:
        return self.by_id.get((tenant, transaction_id))

    def tenant_exists(self, tenant: str) -> bool:
        return self.tenants.get(tenant, False)

    def apply(self, request: TransactionRequest, outcome: Outcome, position: Position) -> bool:
        """Fold a decided request in (not a repeat: those change nothing); True when it binds its key."""
        assert outcome.replay_of is None
        decided = Decided(request.id, outcome.status, outcome.reason, request.fingerprint(), position)
        self.by_id[(request.tenant, request.id)] = decided
        for entry in outcome.entries:
            self.balances[(request.tenant, entry.account, entry.asset)] = entry.balance_after
        if request.idempotency_key is None or outcome.reason in KEY_UNBOUND:
            return False
        assert (request.tenant, request.idempotency_key) not in self.by_key
        self.by_key[(request.tenant, request.idempotency_key)] = decided
        return True

    def remember_replay(self, request: TransactionRequest, original: Decided) -> bool:
        """A repeat under an id of its own: from now on that id resolves to the original and is taken.
        False when the id was already known (the repeat of a repeat)."""
        key = (request.tenant, request.id)
        if key in self.by_id:
            return False
        self.by_id[key] = original
        return True

    def apply_tenant(self, request: TenantRequest, outcome: Outcome) -> None:
        if outcome.status == "committed":
            assert not self.tenant_exists(request.tenant)
            self.tenants[request.tenant] = True

    def record_invalid(self, tenant: str, transaction_id: str, position: Position) -> None:
        """Remember a malformed request under its id so a later request cannot reuse that id."""
        self.by_id[(tenant, transaction_id)] = Decided(transaction_id, "rejected", INVALID, b"", position)


def touched(requests: Iterable[TransactionRequest]) -> set[BalanceKey]:
    """Every balance the requests may read or write."""
    return {
        (r.tenant, account, p.asset)
        for r in requests
        for p in r.postings
        for account in (p.source, p.destination)
    }
