"""Holds and reversals, decided from the log alone (pure)."""

from __future__ import annotations

from ledger.decisions import decide
from ledger.memory import Ledger
from ledger.positions import Position
from ledger.reasons import (
    AMOUNT_EXCEEDS_HOLD,
    AMOUNT_EXCEEDS_REMAINING,
    AMOUNT_NEEDS_ONE_POSTING,
    HOLD_CLOSED,
    HOLD_EXPIRED,
    INSUFFICIENT_FUNDS,
    NOT_FOUND,
    NOT_REVERSIBLE,
    OVERFLOW,
)
from ledger.requests import (
    CAPTURE,
    REVERSE,
    VOID,
    CaptureRequest,
    HoldRequest,
    Posting,
    ReverseRequest,
    TransactionRequest,
    TransferRequest,
    VoidRequest,
)
from ledger.state import Outcome

T = "acme"
USD = "USD/2"
MINUTE_MS = 60_000


def book() -> Ledger:
    ledger = Ledger(tenants={T: True})
    run(ledger, transfer("seed", "@world", "alice", 100))
    return ledger


def transfer(id: str, source: str, destination: str, amount: int) -> TransactionRequest:
    return TransferRequest(id=id, tenant=T, postings=(Posting(source, destination, amount, USD),))


def hold(id: str, *postings: tuple[str, str, int], expires_in_s: int = 60) -> TransactionRequest:
    return HoldRequest(id=id, tenant=T, postings=tuple(Posting(s, d, a, USD) for s, d, a in postings),
                       expires_in_s=expires_in_s)


def act(id: str, kind: str, target: str, amount: int | None = None) -> TransactionRequest:
    """A capture or reversal of `target` (of `amount` of it), or a void of the hold `target`."""
    if kind == CAPTURE:
        return CaptureRequest(id=id, tenant=T, hold=target, amount=amount)
    if kind == REVERSE:
        return ReverseRequest(id=id, tenant=T, transaction=target, amount=amount)
    assert kind == VOID and amount is None
    return VoidRequest(id=id, tenant=T, hold=target)


def run(ledger: Ledger, request: TransactionRequest, now_ms: int = 0, offset: int = 0) -> Outcome:
    ledger.expire(0, now_ms)
    outcome = decide(ledger, request, now_ms)
    if outcome.replay_of is None:
        ledger.apply(request, outcome, Position(0, offset), now_ms)
    return outcome


def available(ledger: Ledger, account: str) -> int:
    key = (T, account, USD)
    return ledger.balance(key) - ledger.held_of(key)


def test_a_hold_reserves_on_available_and_a_transfer_cannot_spend_it() -> None:
    ledger = book()
    assert run(ledger, hold("h1", ("alice", "shop", 70))).status == "committed"
    assert (ledger.balance((T, "alice", USD)), available(ledger, "alice")) == (100, 30)
    assert run(ledger, transfer("t1", "alice", "bob", 31)).reason == INSUFFICIENT_FUNDS
    assert run(ledger, hold("h2", ("alice", "shop", 31))).reason == INSUFFICIENT_FUNDS
    assert run(ledger, transfer("t2", "alice", "bob", 30)).status == "committed"


def test_a_partial_capture_moves_part_and_releases_the_rest_once() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 70)))
    captured = run(ledger, act("c1", CAPTURE, "h1", 50))
    assert captured.status == "committed" and [(p.amount) for p in captured.moved] == [50]
    assert (ledger.balance((T, "alice", USD)), available(ledger, "alice"), ledger.balance((T, "shop", USD))) \
        == (50, 50, 50)
    assert run(ledger, act("c2", CAPTURE, "h1")).reason == HOLD_CLOSED
    assert run(ledger, act("v1", VOID, "h1")).reason == HOLD_CLOSED
    assert ledger.holds[(T, "h1")].state == "captured"


def test_a_capture_over_the_hold_and_of_an_unknown_hold_are_rejected() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 70)))
    assert run(ledger, act("c1", CAPTURE, "h1", 71)).reason == AMOUNT_EXCEEDS_HOLD
    assert run(ledger, act("c2", CAPTURE, "nope")).reason == NOT_FOUND
    assert run(ledger, act("v2", VOID, "nope")).reason == NOT_FOUND
    assert available(ledger, "alice") == 30


def test_a_void_releases_everything() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 70), ("alice", "tax", 10)))
    assert available(ledger, "alice") == 20
    assert run(ledger, act("v1", VOID, "h1")).status == "committed"
    assert (available(ledger, "alice"), ledger.balance((T, "shop", USD))) == (100, 0)


def test_a_hold_expires_by_the_logs_time_and_cannot_be_captured_after() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 70), expires_in_s=60), now_ms=0)
    assert run(ledger, transfer("t1", "alice", "bob", 50), now_ms=MINUTE_MS - 1).reason == INSUFFICIENT_FUNDS
    # The next record at or past expires_at finds the hold expired and its funds available.
    assert run(ledger, transfer("t2", "alice", "bob", 50), now_ms=MINUTE_MS).status == "committed"
    assert ledger.holds[(T, "h1")].state == "expired"
    assert run(ledger, act("c1", CAPTURE, "h1"), now_ms=MINUTE_MS).reason == HOLD_EXPIRED
    assert run(ledger, act("v1", VOID, "h1"), now_ms=MINUTE_MS).reason == HOLD_CLOSED


def test_expiry_is_decided_by_the_time_in_the_request_even_before_the_fold_expires_it() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 70), expires_in_s=1), now_ms=0)
    # decide alone, at a time past the expiry (the fold would have expired it first): still hold_expired.
    assert decide(ledger, act("c1", CAPTURE, "h1"), 1000).reason == HOLD_EXPIRED


def test_partial_reversals_add_up_to_at_most_the_original() -> None:
    ledger = book()
    run(ledger, transfer("t1", "alice", "bob", 60))
    assert run(ledger, act("r1", REVERSE, "t1", 20)).status == "committed"
    assert run(ledger, act("r2", REVERSE, "t1", 41)).reason == AMOUNT_EXCEEDS_REMAINING
    assert run(ledger, act("r3", REVERSE, "t1")).status == "committed"  # the remaining 40
    assert run(ledger, act("r4", REVERSE, "t1", 1)).reason == NOT_REVERSIBLE
    assert (ledger.balance((T, "alice", USD)), ledger.balance((T, "bob", USD))) == (100, 0)
    assert ledger.originals[(T, "t1")].reversed == 60


def test_a_reversal_needs_the_destinations_available_funds() -> None:
    ledger = book()
    run(ledger, transfer("t1", "alice", "bob", 60))
    run(ledger, transfer("t2", "bob", "carol", 50))
    assert run(ledger, act("r1", REVERSE, "t1")).reason == INSUFFICIENT_FUNDS
    assert run(ledger, act("r2", REVERSE, "t1", 10)).status == "committed"


def test_rejected_transactions_holds_and_voids_are_not_reversible() -> None:
    ledger = book()
    run(ledger, transfer("t1", "alice", "bob", 1000))
    run(ledger, hold("h1", ("alice", "shop", 5)))
    run(ledger, act("v1", VOID, "h1"))
    for target in ("t1", "h1", "v1"):
        assert run(ledger, act(f"r-{target}", REVERSE, target)).reason == NOT_REVERSIBLE
    assert run(ledger, act("r-x", REVERSE, "nope")).reason == NOT_FOUND


def test_a_capture_is_reversible_like_any_movement() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 70)))
    run(ledger, act("c1", CAPTURE, "h1", 40))
    assert run(ledger, act("r1", REVERSE, "c1")).status == "committed"
    assert (ledger.balance((T, "alice", USD)), ledger.balance((T, "shop", USD))) == (100, 0)


def test_an_invalid_record_kept_under_its_id_is_not_reversible_whether_carried_or_loaded() -> None:
    ledger = book()
    ledger.record_invalid(T, "bad", Position(0, 9))
    assert run(ledger, act("r1", REVERSE, "bad")).reason == NOT_REVERSIBLE


def test_a_repeats_id_stands_for_its_original_hold_and_transaction() -> None:
    ledger = book()
    placed = HoldRequest(id="h1", tenant=T, postings=(Posting("alice", "shop", 10, USD),), idempotency_key="k",
                         expires_in_s=60)
    run(ledger, placed)
    repeat = HoldRequest(id="h1-retry", tenant=T, postings=placed.postings, idempotency_key="k", expires_in_s=60)
    outcome = run(ledger, repeat)
    assert outcome.replay_of is not None and ledger.remember_replay(repeat, outcome.replay_of)
    captured = run(ledger, act("c1", CAPTURE, "h1-retry"))
    assert (captured.status, captured.target) == ("committed", "h1")
    assert ledger.holds[(T, "h1")].state == "captured"


def test_several_postings_reverse_whole_once_however_large() -> None:
    ledger = Ledger(tenants={T: True})
    big = 2**62
    # Amounts that add up past int64 (each balance stays within it): `reversed` must not sum them.
    assert run(ledger, TransferRequest(id="t1", tenant=T, postings=(
        Posting("@world", "a", big, USD), Posting("a", "b", big, USD), Posting("b", "c", big, USD)))
               ).status == "committed"
    reversal = run(ledger, act("r1", REVERSE, "t1"))
    assert (reversal.status, reversal.reversed) == ("committed", 1)
    assert ledger.originals[(T, "t1")].reversed == 1
    assert run(ledger, act("r2", REVERSE, "t1")).reason == NOT_REVERSIBLE


def test_a_partial_amount_on_several_postings_names_its_reason() -> None:
    # Issue 21 (9): it was rejected `invalid`, with no reason.
    ledger = book()
    run(ledger, TransferRequest(id="t1", tenant=T,
                                postings=(Posting("alice", "bob", 10, USD), Posting("alice", "carol", 15, USD))))
    run(ledger, hold("h1", ("alice", "bob", 5), ("alice", "carol", 5)))
    assert run(ledger, act("r1", REVERSE, "t1", 5)).reason == AMOUNT_NEEDS_ONE_POSTING
    assert run(ledger, act("c1", CAPTURE, "h1", 5)).reason == AMOUNT_NEEDS_ONE_POSTING


def test_a_hold_on_a_system_account_never_puts_available_past_int64() -> None:
    # Issue 21 (3): balance and held were checked, available = balance - held was not, and reads failed.
    ledger = Ledger(tenants={T: True})
    low = -(2**63) + 10
    run(ledger, TransferRequest(id="t1", tenant=T, postings=(Posting("@world", "alice", -low, USD),)))
    assert ledger.balance((T, "@world", USD)) == low
    assert run(ledger, hold("h1", ("@world", "bob", 11))).reason == OVERFLOW
    assert run(ledger, hold("h2", ("@world", "bob", 10))).status == "committed"
    # A transfer that keeps the balance in range but would take available past it is refused too.
    assert run(ledger, transfer("t2", "@world", "bob", 1)).reason == OVERFLOW
    assert ledger.balance((T, "@world", USD)) - ledger.held_of((T, "@world", USD)) == -(2**63)
