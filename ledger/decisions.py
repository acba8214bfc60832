"""The deterministic decision: what a request does to the ledger, from the log alone.

`decide(state, request, now_ms)` validates a request against the state and returns an `Outcome`;
`Ledger.apply` folds an outcome into the state and only asserts, never re-validates, so replaying a log is a
fold. `now_ms` is the record's time on the log (the broker's), never a clock of the process deciding.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, assert_never

from ledger.chain import GENESIS, link
from ledger.positions import Position
from ledger.requests import (
    CAPTURE,
    REVERSE,
    TRANSFER,
    BatchRequest,
    CaptureRequest,
    HoldRequest,
    MonitorRequest,
    PolicyRequest,
    Posting,
    ReverseRequest,
    TenantRequest,
    TransactionRequest,
    TransferRequest,
    UnmonitorRequest,
    VoidRequest,
    Watch,
)
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
NOT_FOUND = "not_found"
HOLD_CLOSED = "hold_closed"
HOLD_EXPIRED = "hold_expired"
AMOUNT_EXCEEDS_HOLD = "amount_exceeds_hold"
NOT_REVERSIBLE = "not_reversible"
AMOUNT_EXCEEDS_REMAINING = "amount_exceeds_remaining"
ACCOUNT_FROZEN = "account_frozen"
OVERDRAFT_IN_USE = "overdraft_in_use"
VERSION_CONFLICT = "version_conflict"
ASSERTION_FAILED = "assertion_failed"
TOO_MANY_MONITORS = "too_many_monitors"
# Each transaction on an account reads every monitor of it, and its outcome carries every crossing: bounded per
# account and per tenant, so no tenant slows the fold or makes an outcome too large for Kafka (1,000 crossings
# of ~450 bytes at most).
MONITORS_PER_ACCOUNT_MAX = 16
MONITORS_PER_TENANT_MAX = 1000
# `amount` names the one posting a partial capture or reversal moves: with several, the request is at fault
# (the API answers 422, not 409, for it).
AMOUNT_NEEDS_ONE_POSTING = "amount_needs_one_posting"
# A key binds the first request that used it, whatever its outcome, except these: a conflict is the key's
# misuse, a tenant that does not exist has no keys to bind, and a malformed request binds nothing (the API
# refuses a partial amount on several postings with 422 before the log whenever it knows the target).
KEY_UNBOUND = frozenset({IDEMPOTENCY_CONFLICT, UNKNOWN_TENANT, AMOUNT_NEEDS_ONE_POSTING})

HELD, CAPTURED, VOIDED, EXPIRED = "held", "captured", "voided", "expired"
# What can be reversed: requests that moved money.
REVERSIBLE_KINDS = frozenset({TRANSFER, CAPTURE, REVERSE})


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


def _restricts(policy: Policy) -> int:
    """1 if the policy limits an overdraft or freezes the account (what decisions read of it), else 0."""
    return int(bool(policy.limits) or policy.frozen)


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


def _replay(prior: Decided, request: TransactionRequest, id_taken: bool) -> Outcome:
    if prior.fingerprint == request.fingerprint():
        return Outcome(prior.status, prior.reason, replay_of=prior)
    if not id_taken:
        # A new request reusing a key: recorded under its own id, the key stays with the original.
        return Outcome("rejected", IDEMPOTENCY_CONFLICT)
    # Its id is taken (by a decided request, or by a repeat of one): nothing can be recorded under it.
    return Outcome("rejected", IDEMPOTENCY_CONFLICT, replay_of=prior)


def _legs(state: LedgerState, tenant: str, postings: tuple[Posting, ...]) -> tuple[list[Entry], dict[BalanceKey, int]]:
    running: dict[BalanceKey, int] = {}
    entries: list[Entry] = []
    for index, posting in enumerate(postings):
        if not posting.amount:  # an `amount_max` posting that found nothing available moves nothing
            continue
        for side, account, amount in ((0, posting.source, -posting.amount), (1, posting.destination, posting.amount)):
            key = (tenant, account, posting.asset)
            after = (running[key] if key in running else state.balance(key)) + amount
            running[key] = after
            entries.append(Entry(account, posting.asset, amount, after, index * 2 + side))
    return entries, running


def _short(state: LedgerState, balances: dict[BalanceKey, int], held: dict[BalanceKey, int]) -> bool:
    """Whether a customer account would go below what its overdraft limit allows of available (posted minus
    held). Only a decrease counts: money coming in is never refused, even to an account below its limit
    (after a policy lowered it)."""
    for key in balances.keys() | held.keys():
        if is_system(key[1]):
            continue
        before = state.balance(key) - state.held_of(key)
        after = balances.get(key, state.balance(key)) - held.get(key, state.held_of(key))
        if after < before and after < -state.policy(key[0], key[1]).limits.get(key[2], 0):
            return True
    return False


def _frozen(state: LedgerState, tenant: str, postings: tuple[Posting, ...]) -> bool:
    """Whether a frozen account would take part: it takes part in no new movement or hold."""
    return state.restricted() and any(state.policy(tenant, account).frozen
                                      for p in postings for account in (p.source, p.destination))


def _move(state: LedgerState, tenant: str, postings: tuple[Posting, ...], held: dict[BalanceKey, int],
          check_funds: bool, reversed_amount: int = 0) -> Outcome:
    """Commit `postings` (and the `held` changes that go with them) unless an account is frozen, a balance
    leaves int64 or, when `check_funds`, a customer account's available balance would pass its limit."""
    if _frozen(state, tenant, postings):
        return Outcome("rejected", ACCOUNT_FROZEN)
    entries, finals = _legs(state, tenant, postings)
    # Any running balance must fit int64: entries store balance_after as a bigint.
    if any(not BALANCE_MIN <= e.balance_after <= BALANCE_MAX for e in entries) or _unbounded(state, finals, held):
        return Outcome("rejected", OVERFLOW)
    if check_funds and _short(state, finals, held):
        return Outcome("rejected", INSUFFICIENT_FUNDS)
    return Outcome("committed", entries=tuple(entries), moved=postings, held=tuple(held.items()),
                   reversed=reversed_amount)


def _unbounded(state: LedgerState, balances: dict[BalanceKey, int], held: dict[BalanceKey, int]) -> bool:
    """Whether a held amount or an available balance (posted minus held: what reads show) leaves int64."""
    for key in balances.keys() | held.keys():
        after_held = held.get(key, state.held_of(key))
        available = balances.get(key, state.balance(key)) - after_held
        if not 0 <= after_held <= BALANCE_MAX or not BALANCE_MIN <= available <= BALANCE_MAX:
            return True
    return False


def _reserved(state: LedgerState, tenant: str, postings: tuple[Posting, ...], sign: int) -> dict[BalanceKey, int]:
    """The held amount of each source after reserving (`sign` 1) or releasing (-1) `postings`."""
    held: dict[BalanceKey, int] = {}
    for p in postings:
        key = (tenant, p.source, p.asset)
        held[key] = held.get(key, state.held_of(key)) + sign * p.amount
    return held


def _hold(state: LedgerState, request: HoldRequest, postings: tuple[Posting, ...]) -> Outcome:
    if _frozen(state, request.tenant, postings):
        return Outcome("rejected", ACCOUNT_FROZEN)
    held = _reserved(state, request.tenant, postings, 1)
    if _unbounded(state, {}, held):
        return Outcome("rejected", OVERFLOW)
    if _short(state, {}, held):
        return Outcome("rejected", INSUFFICIENT_FUNDS)
    return Outcome("committed", held=tuple(held.items()), moved=postings)


def _at_most(state: LedgerState, request: TransferRequest | HoldRequest) -> tuple[Posting, ...]:
    """The postings with each `amount_max` resolved, in order: min(n, what its source has available then:
    posted less held, after the postings before it), never below 0."""
    if not request.amount_max:
        return request.postings
    moved: dict[BalanceKey, int] = {}  # what the postings before this one took from (or brought to) a balance
    out = []
    for index, p in enumerate(request.postings):
        source = (request.tenant, p.source, p.asset)
        if index in request.amount_max:
            available = state.balance(source) - state.held_of(source) + moved.get(source, 0)
            p = p._replace(amount=max(0, min(p.amount, available)))
        out.append(p)
        moved[source] = moved.get(source, 0) - p.amount
        if isinstance(request, TransferRequest):  # a hold reserves on its source; nothing reaches the destination yet
            destination = (request.tenant, p.destination, p.asset)
            moved[destination] = moved.get(destination, 0) + p.amount
    return tuple(out)


def _version_conflict(state: LedgerState, request: TransferRequest | HoldRequest) -> bool:
    return any(state.version(request.tenant, account) != version for account, version in request.if_version)


def _asserted(state: LedgerState, request: TransferRequest | HoldRequest, outcome: Outcome) -> Outcome:
    """`outcome`, or `assertion_failed` when a posted balance after it lies outside an `assert`'s bounds."""
    if outcome.status != "committed" or not request.asserts:
        return outcome
    after = {(request.tenant, e.account, e.asset): e.balance_after for e in outcome.entries}
    for a in request.asserts:
        key = (request.tenant, a.account, a.asset)
        balance = after[key] if key in after else state.balance(key)
        if (a.min is not None and balance < a.min) or (a.max is not None and balance > a.max):
            return Outcome("rejected", ASSERTION_FAILED)
    return outcome


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


def _open_hold(state: LedgerState, request: CaptureRequest | VoidRequest, now_ms: int) -> Hold | Outcome:
    hold = state.hold(request.tenant, resolved(state, request.tenant, request.hold))
    if hold is None:
        return Outcome("rejected", NOT_FOUND)
    if hold.state == EXPIRED or (hold.state == HELD and hold.expires_at_ms <= now_ms):
        return Outcome("rejected", HOLD_EXPIRED if isinstance(request, CaptureRequest) else HOLD_CLOSED)
    if hold.state != HELD:
        return Outcome("rejected", HOLD_CLOSED)
    return hold


def _capture(state: LedgerState, request: CaptureRequest, now_ms: int) -> Outcome:
    hold = _open_hold(state, request, now_ms)
    if isinstance(hold, Outcome):
        return hold
    postings = hold.postings
    if request.amount is not None:
        if len(postings) != 1:
            return Outcome("rejected", AMOUNT_NEEDS_ONE_POSTING)
        if request.amount > postings[0].amount:
            return Outcome("rejected", AMOUNT_EXCEEDS_HOLD)
        postings = (postings[0]._replace(amount=request.amount),)
    # The rest is released; a capture never needs more than its hold reserved, so funds are not checked.
    moved = _move(state, request.tenant, postings, _reserved(state, request.tenant, hold.postings, -1), False)
    return moved._replace(target=hold.id)


def _void(state: LedgerState, request: VoidRequest, now_ms: int) -> Outcome:
    hold = _open_hold(state, request, now_ms)
    if isinstance(hold, Outcome):
        return hold
    return Outcome("committed", held=tuple(_reserved(state, request.tenant, hold.postings, -1).items()),
                   target=hold.id)


def _reverse(state: LedgerState, request: ReverseRequest) -> Outcome:
    target = resolved(state, request.tenant, request.transaction)
    original = state.original(request.tenant, target)
    if original is None:
        return Outcome("rejected", NOT_FOUND)
    remaining = original.remaining
    if original.kind not in REVERSIBLE_KINDS or original.status != "committed" or remaining <= 0:
        return Outcome("rejected", NOT_REVERSIBLE)
    if request.amount is None:
        amount = remaining
    elif len(original.postings) != 1:
        return Outcome("rejected", AMOUNT_NEEDS_ONE_POSTING)
    elif request.amount > remaining:
        return Outcome("rejected", AMOUNT_EXCEEDS_REMAINING)
    else:
        amount = request.amount
    swapped = tuple(Posting(p.destination, p.source, amount if len(original.postings) == 1 else p.amount, p.asset)
                    for p in original.postings)
    # What `reversed` counts: the amount, for one posting; the one whole reversal, for several.
    counted = amount if len(original.postings) == 1 else 1
    return _move(state, request.tenant, swapped, {}, True, counted)._replace(target=target)


def _policy(state: LedgerState, request: PolicyRequest) -> Outcome:
    """A policy replaces the account's, unless it would put the account past its new limit: an overdraft in
    use is paid back before the limit that allows it is lowered (so no balance is ever past its limit)."""
    account = request.account
    limits = dict(request.limits)
    for asset in limits.keys() | state.policy(request.tenant, account).limits.keys():
        key = (request.tenant, account, asset)
        if state.balance(key) - state.held_of(key) < -limits.get(asset, 0):
            return Outcome("rejected", OVERDRAFT_IN_USE, target=account)
    return Outcome("committed", target=account)


def decide(state: LedgerState, request: TransactionRequest, now_ms: int = 0) -> Outcome:
    """Decide `request` by the contract's rules, in order: idempotency, the tenant, then its kind's."""
    prior = state.decided_id(request.tenant, request.id)
    if prior is not None:
        return _replay(prior, request, id_taken=True)
    if request.idempotency_key is not None:
        prior = state.decided_key(request.tenant, request.idempotency_key)
        if prior is not None:
            return _replay(prior, request, id_taken=False)
    if not state.tenant_exists(request.tenant):
        return Outcome("rejected", UNKNOWN_TENANT)
    match request:
        case TransferRequest() | HoldRequest() if request.conditional:
            if _version_conflict(state, request):
                return Outcome("rejected", VERSION_CONFLICT)
            postings = _at_most(state, request)
            moved = (_hold(state, request, postings) if isinstance(request, HoldRequest)
                     else _move(state, request.tenant, postings, {}, True))
            return _asserted(state, request, moved)
        case TransferRequest():
            return _move(state, request.tenant, request.postings, {}, True)
        case HoldRequest():
            return _hold(state, request, request.postings)
        case CaptureRequest():
            return _capture(state, request, now_ms)
        case VoidRequest():
            return _void(state, request, now_ms)
        case ReverseRequest():
            return _reverse(state, request)
        case PolicyRequest():
            return _policy(state, request)
        case MonitorRequest():
            if len(state.watching(request.tenant, request.watch.account)) >= MONITORS_PER_ACCOUNT_MAX \
                    or state.monitor_count(request.tenant) >= MONITORS_PER_TENANT_MAX:
                return Outcome("rejected", TOO_MANY_MONITORS)
            return Outcome("committed")
        case UnmonitorRequest():
            monitor = state.monitor(request.tenant, resolved(state, request.tenant, request.monitor))
            if monitor is None or not monitor.active:
                return Outcome("rejected", NOT_FOUND)
            return Outcome("committed", target=monitor.id)
        case _:
            assert_never(request)


def decide_tenant(state: LedgerState, request: TenantRequest) -> Outcome:
    """A tenant is created once; creating it again is rejected and changes nothing."""
    if state.tenant_exists(request.tenant):
        return Outcome("rejected", TENANT_EXISTS)
    return Outcome("committed")


@dataclass(slots=True)
class Ledger:
    """An in-memory ledger state: the pure fold of a log, and the projector's working set for a batch.

    A key absent from `balances` or `held` holds zero; `decided_*` absent means never decided. The projector
    preloads every key a batch touches, so the same fold runs over a partial view of PostgreSQL.
    """

    balances: dict[BalanceKey, int] = field(default_factory=dict)
    held: dict[BalanceKey, int] = field(default_factory=dict)
    by_key: dict[tuple[str, str], Decided] = field(default_factory=dict)
    by_id: dict[tuple[str, str], Decided] = field(default_factory=dict)
    # Whether each tenant exists (False: looked up, absent), for the tenants a batch names.
    tenants: dict[str, bool] = field(default_factory=dict)
    holds: dict[tuple[str, str], Hold] = field(default_factory=dict)
    originals: dict[tuple[str, str], Original] = field(default_factory=dict)
    policies: dict[tuple[str, str], Policy] = field(default_factory=dict)  # set through `learn_policy`
    restricting: int = 0  # how many of them limit or freeze
    # Per partition, the open holds by expiry: (expires_at_ms, tenant, id); closed ones are skipped on pop.
    expiring: dict[int, list[tuple[int, str, str]]] = field(default_factory=dict)
    # Per tenant, its chain so far: (how many transactions it links, the last one's hash); absent: none yet.
    chains: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Per balance, for statements: (the sum of its credit entries, how many entries it has), so far.
    turnover: dict[BalanceKey, tuple[int, int]] = field(default_factory=dict)
    # Batches that bound an idempotency key: (tenant, batch id) -> their items' ids, in order.
    batches: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # Per account: how many committed records changed it (contract v3's `version`); absent: 0, or not loaded.
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    # Balance monitors known by (tenant, id): created here, loaded with their account, or named by a removal.
    monitors: dict[tuple[str, str], Monitor] = field(default_factory=dict)
    # Per account, its active monitors in the order they were created. Loaded with the account's policy, so
    # absent means none for every account the batch moves (those are all loaded).
    watched: dict[tuple[str, str], tuple[Monitor, ...]] = field(default_factory=dict)
    # Per tenant, how many monitors are active (loaded with whether the tenant exists).
    monitor_counts: dict[str, int] = field(default_factory=dict)

    def balance(self, key: BalanceKey) -> int:
        return self.balances.get(key, 0)

    def held_of(self, key: BalanceKey) -> int:
        return self.held.get(key, 0)

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None:
        return self.by_key.get((tenant, idempotency_key))

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None:
        return self.by_id.get((tenant, transaction_id))

    def tenant_exists(self, tenant: str) -> bool:
        return self.tenants.get(tenant, False)

    def hold(self, tenant: str, hold_id: str) -> Hold | None:
        return self.holds.get((tenant, hold_id))

    def original(self, tenant: str, transaction_id: str) -> Original | None:
        return self.originals.get((tenant, transaction_id))

    def policy(self, tenant: str, account: str) -> Policy:
        if not self.restricting:  # a transfer asks up to eight times; most ledgers limit and freeze nothing
            return NO_POLICY
        return self.policies.get((tenant, account), NO_POLICY)

    def restricted(self) -> bool:
        """Whether any policy known limits or freezes an account (else `policy` is NO_POLICY for all)."""
        return self.restricting > 0

    def version(self, tenant: str, account: str) -> int:
        return self.versions.get((tenant, account), 0)

    def monitor(self, tenant: str, monitor_id: str) -> Monitor | None:
        return self.monitors.get((tenant, monitor_id))

    def watching(self, tenant: str, account: str) -> tuple[Monitor, ...]:
        return self.watched.get((tenant, account), ())

    def monitor_count(self, tenant: str) -> int:
        return self.monitor_counts.get(tenant, 0)

    def learn_monitor(self, monitor: Monitor) -> Monitor:
        """Know a monitor loaded from PostgreSQL (one this process knows already is newer: it is kept); an
        active one joins its account's list. Returns the one known."""
        known = self.monitors.get((monitor.tenant, monitor.id))
        if known is not None:
            return known
        self.monitors[(monitor.tenant, monitor.id)] = monitor
        if monitor.active:
            key = (monitor.tenant, monitor.watch.account)
            self.watched[key] = (*self.watched.get(key, ()), monitor)
        return monitor

    def bump(self, tenant: str, accounts: Iterable[str]) -> None:
        """One more change of each of `accounts` (each once per record)."""
        for account in accounts:
            key = (tenant, account)
            self.versions[key] = self.versions.get(key, 0) + 1

    def learn_policy(self, key: tuple[str, str], policy: Policy) -> None:
        """Know an account's policy (set by a request, or loaded from PostgreSQL)."""
        old = self.policies.get(key)
        self.restricting += _restricts(policy) - (_restricts(old) if old is not None else 0)
        self.policies[key] = policy

    def apply(self, request: TransactionRequest, outcome: Outcome, position: Position, now_ms: int = 0) -> bool:
        """Fold a decided request in (not a repeat: those change nothing); True when it binds its key."""
        assert outcome.replay_of is None
        decided = Decided(request.id, outcome.status, outcome.reason, request.fingerprint(), position)
        self.by_id[(request.tenant, request.id)] = decided
        for entry in outcome.entries:
            self.balances[(request.tenant, entry.account, entry.asset)] = entry.balance_after
        for key, held in outcome.held:
            assert held >= 0
            self.held[key] = held
        self.originals[(request.tenant, request.id)] = Original(request.kind, outcome.status, outcome.moved)
        if outcome.status == "committed":
            self.bump(request.tenant, changed_accounts(self, request, outcome))
            self._effect(request, outcome, position, now_ms)
        if request.idempotency_key is None or outcome.reason in KEY_UNBOUND:
            return False
        assert (request.tenant, request.idempotency_key) not in self.by_key
        self.by_key[(request.tenant, request.idempotency_key)] = decided
        return True

    def _effect(self, request: TransactionRequest, outcome: Outcome, position: Position, now_ms: int) -> None:
        match request:
            case TransferRequest():
                pass  # its entries are all it does
            case HoldRequest():
                # What it reserves: its postings, with any `amount_max` resolved.
                self.track(Hold(request.tenant, request.id, outcome.moved or request.postings,
                                now_ms + request.expires_in_s * 1000, position))
            case CaptureRequest() | VoidRequest():
                hold = self.holds[(request.tenant, outcome.target or "")]
                assert hold.state == HELD
                hold.state, hold.closed_by, hold.closed_at_ms = (
                    CAPTURED if isinstance(request, CaptureRequest) else VOIDED, request.id, now_ms)
            case ReverseRequest():
                self.originals[(request.tenant, outcome.target or "")].reversed += outcome.reversed
            case PolicyRequest():
                self.learn_policy((request.tenant, request.account),
                                  Policy(dict(request.limits), request.frozen, request.metadata))
            case MonitorRequest():
                self.learn_monitor(Monitor(request.tenant, request.id, request.watch))
                self.monitor_counts[request.tenant] = self.monitor_count(request.tenant) + 1
            case UnmonitorRequest():
                monitor = self.monitors[(request.tenant, outcome.target or "")]
                monitor.active = False
                self.monitor_counts[request.tenant] = self.monitor_count(request.tenant) - 1
                key = (request.tenant, monitor.watch.account)
                left = tuple(m for m in self.watched.get(key, ()) if m.id != monitor.id)
                if left:
                    self.watched[key] = left
                else:
                    self.watched.pop(key, None)
            case _:
                assert_never(request)

    def track(self, hold: Hold) -> None:
        """Know `hold` (created, or loaded from PostgreSQL), and when it expires if it is open."""
        self.holds[(hold.tenant, hold.id)] = hold
        if hold.state == HELD:
            heapq.heappush(self.expiring.setdefault(hold.position.partition, []),
                           (hold.expires_at_ms, hold.tenant, hold.id))

    def expire(self, partition: int, now_ms: int) -> list[Hold]:
        """Close, as expired, every open hold of `partition` whose time has come by `now_ms`; release what
        they held. Returns them, in the order they expired."""
        heap = self.expiring.get(partition)
        expired: list[Hold] = []
        while heap and heap[0][0] <= now_ms:
            _, tenant, hold_id = heapq.heappop(heap)
            hold = self.holds.get((tenant, hold_id))
            if hold is None or hold.state != HELD:
                continue
            hold.state, hold.closed_at_ms = EXPIRED, hold.expires_at_ms
            self.bump(tenant, hold_accounts(hold.postings))
            for p in hold.postings:
                key = (tenant, p.source, p.asset)
                self.held[key] = self.held_of(key) - p.amount
                assert self.held[key] >= 0
            expired.append(hold)
        return expired

    def extend_chain(self, tenant: str, body: bytes) -> tuple[int, str, str]:
        """Link one more committed transaction of `tenant`: (its index from 1, its hash, the previous hash)."""
        count, head = self.chains.get(tenant, (0, GENESIS))
        hashed = link(head, body)
        self.chains[tenant] = (count + 1, hashed)
        return count + 1, hashed, head

    def count_entry(self, key: BalanceKey, amount: int) -> tuple[int, int]:
        """One more entry on `key`: its running credit total and number after it (what a statement reads)."""
        credits, count = self.turnover.get(key, (0, 0))
        after = (credits + amount if amount > 0 else credits, count + 1)
        self.turnover[key] = after
        return after

    def bind_batch(self, batch: BatchRequest, status: Status, reason: str | None, position: Position) -> Decided:
        """A decided batch takes its idempotency key: a later request with the key repeats the whole batch."""
        assert batch.idempotency_key is not None
        assert (batch.tenant, batch.idempotency_key) not in self.by_key
        decided = Decided(batch.id, status, reason, batch.fingerprint(), position)
        self.by_key[(batch.tenant, batch.idempotency_key)] = decided
        self.batches[(batch.tenant, batch.id)] = tuple(i.id for i in batch.items)
        return decided

    def repeated_items(self, batch: BatchRequest, prior: Decided) -> tuple[str, ...] | None:
        """The ids of the items of the batch that `prior` (what the batch's key bound) decided, when `batch`
        repeats it exactly; None when the key was bound to another body (or to a single request)."""
        originals = self.batches.get((batch.tenant, prior.transaction_id))
        if originals is None or len(originals) != len(batch.items) or prior.fingerprint != batch.fingerprint():
            return None
        return originals

    def batch_replay(self, item: TransactionRequest, original_id: str | None) -> Outcome:
        """The outcome of an item of a batch whose key was bound already: a replay of the original batch's item
        at its place (`original_id`), or a conflict when the batch is not the same (the key stays bound)."""
        taken = self.decided_id(item.tenant, item.id)
        if taken is not None:
            return _replay(taken, item, id_taken=True)
        original = None if original_id is None else self.decided_id(item.tenant, original_id)
        if original is not None:
            return Outcome(original.status, original.reason, replay_of=original)
        return Outcome("rejected", IDEMPOTENCY_CONFLICT)

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
        """Remember a malformed request under its id so a later request cannot reuse that id (nor reverse it:
        the ledger knows it exactly as it knows the row stored for it)."""
        self.by_id[(tenant, transaction_id)] = Decided(transaction_id, "rejected", INVALID, b"", position)
        self.originals[(tenant, transaction_id)] = Original(TRANSFER, "rejected", ())


def touched(requests: Iterable[TransactionRequest], state: LedgerState) -> set[BalanceKey]:
    """Every balance the requests may read or write, their targets' postings included (`state` must hold
    the holds and originals they name)."""
    keys: set[BalanceKey] = set()
    for r in requests:
        postings: tuple[Posting, ...] = ()
        match r:
            case TransferRequest() | HoldRequest():
                postings = r.postings
                keys.update((r.tenant, a.account, a.asset) for a in r.asserts)  # read, even where nothing moves
            case CaptureRequest() | VoidRequest():
                hold = state.hold(r.tenant, resolved(state, r.tenant, r.hold))
                postings = hold.postings if hold is not None else ()
            case ReverseRequest():
                original = state.original(r.tenant, resolved(state, r.tenant, r.transaction))
                postings = original.postings if original is not None else ()
            case PolicyRequest():  # the balance rows that carry its limits, now or before
                limited = {asset for asset, _ in r.limits} | state.policy(r.tenant, r.account).limits.keys()
                keys.update((r.tenant, r.account, asset) for asset in limited)
            case MonitorRequest():  # its account's monitors are read (loaded with its policy)
                keys.add((r.tenant, r.watch.account, r.watch.asset))
            case UnmonitorRequest():
                monitor = state.monitor(r.tenant, resolved(state, r.tenant, r.monitor))
                if monitor is not None:
                    keys.add((r.tenant, monitor.watch.account, monitor.watch.asset))
            case _:
                assert_never(r)
        keys.update((r.tenant, account, p.asset) for p in postings for account in (p.source, p.destination))
    return keys


class Scratch:
    """A ledger to decide an atomic batch of transfers on: reads fall through to `base`, writes stay here,
    and the whole is dropped afterwards. Transfers change balances, ids, keys and what is reversible; never
    what is held, a hold, a policy or a tenant."""

    def __init__(self, base: Ledger) -> None:
        self.base = base
        self.balances: dict[BalanceKey, int] = {}
        self.by_id: dict[tuple[str, str], Decided] = {}
        self.by_key: dict[tuple[str, str], Decided] = {}
        self.versions: dict[tuple[str, str], int] = {}

    def balance(self, key: BalanceKey) -> int:
        return self.balances[key] if key in self.balances else self.base.balance(key)

    def version(self, tenant: str, account: str) -> int:
        key = (tenant, account)
        return self.versions[key] if key in self.versions else self.base.version(tenant, account)

    def held_of(self, key: BalanceKey) -> int:
        return self.base.held_of(key)

    def decided_key(self, tenant: str, idempotency_key: str) -> Decided | None:
        return self.by_key.get((tenant, idempotency_key)) or self.base.decided_key(tenant, idempotency_key)

    def decided_id(self, tenant: str, transaction_id: str) -> Decided | None:
        return self.by_id.get((tenant, transaction_id)) or self.base.decided_id(tenant, transaction_id)

    def tenant_exists(self, tenant: str) -> bool:
        return self.base.tenant_exists(tenant)

    def hold(self, tenant: str, hold_id: str) -> Hold | None:
        return self.base.hold(tenant, hold_id)

    def original(self, tenant: str, transaction_id: str) -> Original | None:
        return self.base.original(tenant, transaction_id)

    def policy(self, tenant: str, account: str) -> Policy:
        return self.base.policy(tenant, account)

    def restricted(self) -> bool:
        return self.base.restricted()

    def monitor(self, tenant: str, monitor_id: str) -> Monitor | None:
        return self.base.monitor(tenant, monitor_id)

    def watching(self, tenant: str, account: str) -> tuple[Monitor, ...]:
        return self.base.watching(tenant, account)

    def monitor_count(self, tenant: str) -> int:
        return self.base.monitor_count(tenant)

    def apply(self, request: TransactionRequest, outcome: Outcome, position: Position) -> None:
        decided = Decided(request.id, outcome.status, outcome.reason, request.fingerprint(), position)
        self.by_id[(request.tenant, request.id)] = decided
        for entry in outcome.entries:
            self.balances[(request.tenant, entry.account, entry.asset)] = entry.balance_after
        for account in changed_accounts(self, request, outcome):
            self.versions[(request.tenant, account)] = self.version(request.tenant, account) + 1
        if request.idempotency_key is not None and outcome.reason not in KEY_UNBOUND:
            self.by_key[(request.tenant, request.idempotency_key)] = decided


def first_failure(ledger: Ledger, items: tuple[TransactionRequest, ...], now_ms: int, position: Position) -> str | None:
    """Why an atomic batch cannot commit: the reason of the first of its transfers that would be rejected
    (decided in order, each on the state the ones before it leave), or None when all would commit."""
    scratch = Scratch(ledger)
    for item in items:
        outcome = decide(scratch, item, now_ms)
        if outcome.status == "rejected":
            return outcome.reason or INVALID
        if outcome.replay_of is None:
            scratch.apply(item, outcome, position)
    return None
