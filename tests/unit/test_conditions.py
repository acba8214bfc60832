"""Contract v3's conditions on a write, decided in the fold: versions, `if_version`, `assert`, `amount_max`."""

from __future__ import annotations

import orjson
import pytest

from ledger.batch import BatchRows, Record, decode_all
from ledger.bodies import parse_body, parse_items
from ledger.codec import decode_request, encode_request
from ledger.decisions import decide
from ledger.errors import InvalidRequest
from ledger.fold import fold_batch
from ledger.memory import Ledger
from ledger.placement import partition_for
from ledger.positions import Position
from ledger.reasons import ASSERTION_FAILED, INSUFFICIENT_FUNDS, VERSION_CONFLICT
from ledger.requests import (
    HOLD,
    VOID,
    Assertion,
    BatchRequest,
    CaptureRequest,
    HoldRequest,
    PolicyRequest,
    Posting,
    TransactionRequest,
    TransferRequest,
    VoidRequest,
)
from ledger.state import HELD, Outcome
from ledger.validation import CONDITIONS_MAX

T = "acme"
USD = "USD/2"


def book() -> Ledger:
    return Ledger(tenants={T: True})


def run(ledger: Ledger, request: TransactionRequest, offset: int = 0, now_ms: int = 0) -> Outcome:
    outcome = decide(ledger, request, now_ms)
    if outcome.replay_of is None:
        ledger.apply(request, outcome, Position(0, offset), now_ms)
    return outcome


def pay(id: str, source: str, destination: str, amount: int, **conditions: object) -> TransactionRequest:
    return TransferRequest(id=id, tenant=T, postings=(Posting(source, destination, amount, USD),),
                           **conditions)  # type: ignore[arg-type]


def funded(amount: int = 100) -> Ledger:
    ledger = book()
    run(ledger, pay("fund", "@world", "alice", amount))
    return ledger


def test_a_version_counts_the_committed_records_that_changed_the_account() -> None:
    ledger = funded()
    assert (ledger.version(T, "alice"), ledger.version(T, "@world"), ledger.version(T, "bob")) == (1, 1, 0)
    run(ledger, pay("p1", "alice", "bob", 10))
    run(ledger, pay("p2", "alice", "bob", 1000))  # rejected: changes nothing
    assert (ledger.version(T, "alice"), ledger.version(T, "bob")) == (2, 1)
    hold = HoldRequest(id="h1", tenant=T, postings=(Posting("alice", "carol", 5, USD),), expires_in_s=60)
    run(ledger, hold)
    assert (ledger.version(T, "alice"), ledger.version(T, "carol")) == (3, 1)
    run(ledger, CaptureRequest(id="c1", tenant=T, hold="h1"))
    assert (ledger.version(T, "alice"), ledger.version(T, "carol")) == (4, 2)
    run(ledger, VoidRequest(id="v1", tenant=T, hold="h1"))  # closed: rejected
    assert ledger.version(T, "alice") == 4
    run(ledger, PolicyRequest(id="pol", tenant=T, frozen=True, account="dave"))
    assert ledger.version(T, "dave") == 1


def test_an_expired_hold_moves_the_version_of_its_accounts() -> None:
    ledger = funded()
    run(ledger, HoldRequest(id="h1", tenant=T, postings=(Posting("alice", "bob", 5, USD),), expires_in_s=1))
    assert ledger.version(T, "bob") == 1
    expired = ledger.expire(0, 1_000)
    assert [h.id for h in expired] == ["h1"]
    assert (ledger.version(T, "alice"), ledger.version(T, "bob")) == (3, 2)


def test_if_version_commits_only_on_the_exact_version() -> None:
    ledger = funded()
    stale = run(ledger, pay("p1", "alice", "bob", 10, if_version=(("alice", 0),)))
    assert (stale.status, stale.reason) == ("rejected", VERSION_CONFLICT)
    fresh = run(ledger, pay("p2", "alice", "bob", 10, if_version=(("alice", 1), ("nobody", 0))))
    assert fresh.status == "committed"
    again = run(ledger, pay("p3", "alice", "bob", 10, if_version=(("alice", 1),)))
    assert again.reason == VERSION_CONFLICT
    assert ledger.balance((T, "alice", USD)) == 90


def test_assert_bounds_the_posted_balance_after_the_request() -> None:
    ledger = funded()
    low = run(ledger, pay("p1", "alice", "bob", 60, asserts=(Assertion("alice", USD, 50, None),)))
    assert (low.status, low.reason) == ("rejected", ASSERTION_FAILED)
    assert ledger.balance((T, "alice", USD)) == 100
    ok = run(ledger, pay("p2", "alice", "bob", 50, asserts=(Assertion("alice", USD, 50, 50),
                                                            Assertion("bob", USD, None, 50))))
    assert ok.status == "committed"
    # An account the request does not touch: its balance as it stands.
    untouched = run(ledger, pay("p3", "bob", "carol", 1, asserts=(Assertion("alice", USD, 51, None),)))
    assert untouched.reason == ASSERTION_FAILED
    system = run(ledger, pay("p4", "@world", "carol", 1, asserts=(Assertion("@world", USD, None, -101),)))
    assert system.status == "committed"


def test_amount_max_moves_what_is_available_and_never_more() -> None:
    ledger = funded(100)
    run(ledger, HoldRequest(id="h1", tenant=T, postings=(Posting("alice", "x", 30, USD),), expires_in_s=60))
    out = run(ledger, TransferRequest(id="m1", tenant=T, postings=(Posting("alice", "bob", 500, USD),),
                                      amount_max=frozenset({0})))
    assert out.status == "committed"
    assert out.moved == (Posting("alice", "bob", 70, USD),)  # 100 posted, 30 held
    assert ledger.balance((T, "alice", USD)) == 30
    versions = (ledger.version(T, "alice"), ledger.version(T, "bob"))
    nothing = run(ledger, TransferRequest(id="m2", tenant=T, postings=(Posting("alice", "bob", 5, USD),),
                                          amount_max=frozenset({0})))
    assert (nothing.status, nothing.moved[0].amount, nothing.entries) == ("committed", 0, ())
    assert (ledger.version(T, "alice"), ledger.version(T, "bob")) == versions  # nothing moved: nothing changed
    smaller = run(ledger, TransferRequest(id="m3", tenant=T, postings=(Posting("bob", "carol", 20, USD),),
                                          amount_max=frozenset({0})))
    assert smaller.moved[0].amount == 20


def test_amount_max_sees_the_postings_before_it() -> None:
    ledger = funded(10)
    request = TransferRequest(id="m", tenant=T, postings=(
        Posting("alice", "bob", 4, USD), Posting("alice", "carol", 100, USD), Posting("bob", "dave", 100, USD)),
        amount_max=frozenset({1, 2}))
    out = run(ledger, request)
    assert [p.amount for p in out.moved] == [4, 6, 4]
    assert ledger.balance((T, "alice", USD)) == 0


def test_a_hold_with_amount_max_reserves_what_was_available() -> None:
    ledger = funded(40)
    hold = HoldRequest(id="h", tenant=T, postings=(Posting("alice", "bob", 100, USD),), expires_in_s=60,
                       amount_max=frozenset({0}))
    out = run(ledger, hold)
    assert out.status == "committed"
    assert ledger.held_of((T, "alice", USD)) == 40
    assert ledger.holds[(T, "h")].postings == (Posting("alice", "bob", 40, USD),)
    assert ledger.holds[(T, "h")].state == HELD


def test_conditions_fail_an_atomic_batch_whole() -> None:
    ledger = funded()
    items = (pay("i1", "alice", "bob", 10), pay("i2", "alice", "carol", 10, if_version=(("alice", 1),)))
    batch = BatchRequest("b", T, items)
    tenant_partition = partition_for(T.encode(), 4)
    record = Record(tenant_partition, 5, T.encode(), encode_request(batch), 1_700_000_000_000)
    rows = fold_batch(ledger, [record], decode_all([record], 4), BatchRows())
    # i1 moves alice to version 2 first, so i2's if_version fails, and with it the batch.
    assert [(r.status, r.reason) for r in rows.transactions] == [("rejected", VERSION_CONFLICT)] * 2
    assert ledger.balance((T, "alice", USD)) == 100


def test_the_fold_writes_versions_and_shows_what_amount_max_moved() -> None:
    ledger = funded(25)
    request = TransferRequest(id="m", tenant=T, postings=(Posting("alice", "bob", 100, USD),),
                              amount_max=frozenset({0}))
    record = Record(partition_for(T.encode(), 4), 9, T.encode(), encode_request(request), 1_700_000_000_000)
    rows = fold_batch(ledger, [record], decode_all([record], 4), BatchRows())
    postings = orjson.loads(rows.transactions[0].postings)
    assert postings == [{"source": "alice", "destination": "bob", "amount": 25, "asset": USD}]
    assert {k: v[0] for k, v in rows.versions.items()} == {(T, "alice"): 2, (T, "bob"): 1}


def test_the_wire_carries_conditions_and_reads_them_back() -> None:
    request = TransferRequest(id="m", tenant=T,
                              postings=(Posting("alice", "bob", 7, USD), Posting("@world", "bob", 1, USD)),
                              if_version=(("alice", 3),), asserts=(Assertion("bob", USD, 0, None),),
                              amount_max=frozenset({0}))
    value = encode_request(request)
    assert orjson.loads(value)["postings"][0]["amount_max"] == 7
    assert decode_request(T.encode(), value) == request


def test_a_request_without_conditions_keeps_its_bytes_and_fingerprint() -> None:
    plain = TransferRequest(id="p", tenant=T, postings=(Posting("alice", "bob", 7, USD),), idempotency_key="key-1",
                            metadata={"a": "b"}, reference="ref")
    # Pinned: recorded before conditions existed (a log written then replays with the same idempotency).
    assert encode_request(plain) == (b'{"v":1,"id":"p","tenant":"acme","postings":[{"source":"alice",'
                                     b'"destination":"bob","amount":7,"asset":"USD/2"}],"idempotency_key":"key-1",'
                                     b'"metadata":{"a":"b"},"reference":"ref"}')
    assert plain.fingerprint().hex() == "4e776880130bf1d77c6e0c60908b176ca4ea005c3fdc6f0be08ecb118a03b208"
    hold = HoldRequest(id="h", tenant=T, postings=(Posting("alice", "bob", 7, USD),), expires_in_s=60)
    assert hold.fingerprint().hex() == "4b32ba19728ff353c0cd70a89c3910b762dd5b3f5d4a9321f8c9d99e18e25c6a"
    conditioned = TransferRequest(id="p", tenant=T, postings=plain.postings, idempotency_key="key-1",
                                  metadata={"a": "b"}, reference="ref", amount_max=frozenset({0}))
    assert conditioned.fingerprint() != plain.fingerprint()


@pytest.mark.parametrize("body", [
    {"postings": [{"source": "@world", "destination": "b", "amount_max": 5, "asset": USD}]},  # system source
    {"postings": [{"source": "a", "destination": "b", "amount_max": 0, "asset": USD}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "amount_max": 5, "asset": USD}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}], "if_version": {"a": -1}},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}], "if_version": {"a": 2**63}},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}], "if_version": {"a": True}},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}], "if_version": {"a\x00": 1}},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}], "if_version": {}},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}], "if_version": [1]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}],
     "assert": [{"account": "a", "asset": USD, "min": 5, "max": 4}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}],
     "assert": [{"account": "a", "asset": USD, "min": 2**63}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}],
     "assert": [{"account": "a", "asset": USD, "max": 1.5}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}],
     "assert": [{"account": "a", "min": 1}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}],
     "assert": [{"account": "a", "asset": USD, "extra": 1}]},
    {"postings": [{"source": "a", "destination": "b", "amount": 5, "asset": USD}],
     "if_version": {f"a{i}": 0 for i in range(64)},
     "assert": [{"account": "a", "asset": USD}] * (CONDITIONS_MAX - 63)},
])
def test_malformed_conditions_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        parse_body(body, id="x", tenant=T, idempotency_key=None)
    with pytest.raises(InvalidRequest):
        parse_items([body], T, ["x"])


def test_conditions_are_only_for_transfers_holds_and_batch_members() -> None:
    with pytest.raises(InvalidRequest):
        parse_body({"if_version": {"a": 1}}, id="x", tenant=T, idempotency_key=None, kind=VOID, target="h")
    parsed = parse_body({"postings": [{"source": "a", "destination": "b", "amount_max": 5, "asset": USD}],
                         "expires_in_s": 5, "if_version": {"b": 0, "a": 2},
                         "assert": [{"account": "@world", "asset": USD, "max": 0}]},
                        id="x", tenant=T, idempotency_key=None, kind=HOLD)
    assert parsed.if_version == (("a", 2), ("b", 0))
    assert parsed.amount_max == frozenset({0})


def test_insufficient_funds_is_still_the_reason_when_the_move_fails_first() -> None:
    ledger = funded(5)
    out = run(ledger, pay("p", "alice", "bob", 6, asserts=(Assertion("alice", USD, -100, None),)))
    assert out.reason == INSUFFICIENT_FUNDS
