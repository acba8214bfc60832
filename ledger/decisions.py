"""The deterministic decision: what a request does to the ledger, from the log alone.

`decide(state, request, now_ms)` validates a request against the state and returns an `Outcome`;
`Ledger.apply` folds an outcome into the state and only asserts, never re-validates, so replaying a log is a
fold. `now_ms` is the record's time on the log (the broker's), never a clock of the process deciding.

The rules are here; the reasons they give are `ledger.reasons`, what they read `ledger.state`, and the
ledger they are decided on (`Ledger`, and `Scratch` for an atomic batch) `ledger.memory`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from ledger.memory import Ledger, Scratch
from ledger.positions import Position
from ledger.reasons import (
    ACCOUNT_FROZEN,
    AMOUNT_EXCEEDS_HOLD,
    AMOUNT_EXCEEDS_REMAINING,
    AMOUNT_NEEDS_ONE_POSTING,
    ASSERTION_FAILED,
    HOLD_CLOSED,
    HOLD_EXPIRED,
    IDEMPOTENCY_CONFLICT,
    INSUFFICIENT_FUNDS,
    INVALID,
    MONITORS_PER_ACCOUNT_MAX,
    MONITORS_PER_TENANT_MAX,
    NOT_FOUND,
    NOT_REVERSIBLE,
    OVERDRAFT_IN_USE,
    OVERFLOW,
    TENANT_EXISTS,
    TOO_MANY_MONITORS,
    UNKNOWN_TENANT,
    VERSION_CONFLICT,
)
from ledger.requests import (
    CAPTURE,
    REVERSE,
    TRANSFER,
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
)
from ledger.state import (
    EXPIRED,
    HELD,
    BalanceKey,
    Decided,
    Entry,
    Hold,
    LedgerState,
    Outcome,
    resolved,
)
from ledger.validation import BALANCE_MAX, BALANCE_MIN, is_system

# What can be reversed: requests that moved money.
REVERSIBLE_KINDS = frozenset({TRANSFER, CAPTURE, REVERSE})


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


def batch_replay(state: LedgerState, item: TransactionRequest, original_id: str | None) -> Outcome:
    """The outcome of an item of a batch whose key was bound already: a replay of the original batch's item
    at its place (`original_id`), or a conflict when the batch is not the same (the key stays bound)."""
    taken = state.decided_id(item.tenant, item.id)
    if taken is not None:
        return _replay(taken, item, id_taken=True)
    original = None if original_id is None else state.decided_id(item.tenant, original_id)
    if original is not None:
        return Outcome(original.status, original.reason, replay_of=original)
    return Outcome("rejected", IDEMPOTENCY_CONFLICT)


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
