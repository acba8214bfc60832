from __future__ import annotations

from ledger.decisions import decide, decide_tenant
from ledger.memory import Ledger
from ledger.positions import Position
from ledger.reasons import IDEMPOTENCY_CONFLICT, INSUFFICIENT_FUNDS, OVERFLOW, TENANT_EXISTS, UNKNOWN_TENANT
from ledger.requests import (
    Posting,
    TenantRequest,
    TransactionRequest,
    TransferRequest,
)
from ledger.state import Outcome
from ledger.validation import AMOUNT_MAX

T = "acme"


def tx(id: str, *postings: tuple[str, str, int], key: str | None = None, asset: str = "USD/2",
       reference: str | None = None) -> TransactionRequest:
    return TransferRequest(id=id, tenant=T, postings=tuple(Posting(s, d, a, asset) for s, d, a in postings),
                           idempotency_key=key, metadata={}, reference=reference)


def book() -> Ledger:
    """A ledger in which tenant T exists."""
    return Ledger(tenants={T: True})


def run(ledger: Ledger, request: TransactionRequest, offset: int = 0) -> Outcome:
    outcome = decide(ledger, request)
    if outcome.replay_of is None:
        ledger.apply(request, outcome, Position(0, offset))
    return outcome


def test_deposit_commits_and_world_goes_negative() -> None:
    ledger = book()
    outcome = run(ledger, tx("1", ("@world", "alice", 100)))
    assert outcome.status == "committed"
    assert [(e.account, e.amount, e.balance_after) for e in outcome.entries] == [("@world", -100, -100),
                                                                                  ("alice", 100, 100)]
    assert ledger.balance((T, "alice", "USD/2")) == 100


def test_overdraft_is_rejected_and_changes_nothing() -> None:
    ledger = book()
    run(ledger, tx("1", ("@world", "alice", 100)))
    outcome = run(ledger, tx("2", ("alice", "bob", 101)))
    assert (outcome.status, outcome.reason, outcome.entries) == ("rejected", INSUFFICIENT_FUNDS, ())
    assert ledger.balance((T, "alice", "USD/2")) == 100
    assert ledger.balance((T, "bob", "USD/2")) == 0


def test_funds_are_checked_after_the_whole_transaction() -> None:
    ledger = book()
    # bob pays carol before receiving from @world in the same transaction: fine, the end state is >= 0.
    outcome = run(ledger, tx("1", ("bob", "carol", 50), ("@world", "bob", 50)))
    assert outcome.status == "committed"
    assert ledger.balance((T, "bob", "USD/2")) == 0


def test_a_transaction_of_128_postings_applies_all_or_none() -> None:
    ledger = book()
    run(ledger, tx("seed", ("@world", "a0", 127)))
    postings = [(f"a{i}", f"a{i + 1}", 127 - i) for i in range(127)]
    good = run(ledger, tx("chain", *postings, ("a127", "a0", 1)))
    assert good.status == "committed"
    before = dict(ledger.balances)
    bad = run(ledger, tx("chain2", *postings, ("a5", "a0", 10**6)))
    assert (bad.status, bad.reason) == ("rejected", INSUFFICIENT_FUNDS)
    assert ledger.balances == before


def test_balance_leaving_int64_is_overflow() -> None:
    ledger = book()
    run(ledger, tx("1", ("@world", "alice", AMOUNT_MAX)))
    outcome = run(ledger, tx("2", ("@world", "alice", 1)))
    assert (outcome.status, outcome.reason) == ("rejected", OVERFLOW)
    run(ledger, tx("3", ("alice", "bob", AMOUNT_MAX)))
    # @world now holds -(2^63 - 1): one more unit is the lowest bigint, two more overflow.
    assert run(ledger, tx("4", ("@world", "carol", 1))).status == "committed"
    assert run(ledger, tx("5", ("@world", "carol", 1))).reason == OVERFLOW


def test_same_idempotency_key_same_body_is_the_original_outcome() -> None:
    ledger = book()
    first = run(ledger, tx("1", ("@world", "alice", 5), key="k"))
    again = run(ledger, tx("2", ("@world", "alice", 5), key="k"), offset=1)
    assert first.status == again.status == "committed"
    assert again.replay_of is not None and again.replay_of.transaction_id == "1"
    assert ledger.balance((T, "alice", "USD/2")) == 5
    assert (T, "2") not in ledger.by_id


def test_same_idempotency_key_replays_a_rejection_too() -> None:
    ledger = book()
    run(ledger, tx("1", ("alice", "bob", 5), key="k"))
    run(ledger, tx("seed", ("@world", "alice", 5)))
    again = run(ledger, tx("2", ("alice", "bob", 5), key="k"))
    assert (again.status, again.reason) == ("rejected", INSUFFICIENT_FUNDS)
    assert ledger.balance((T, "bob", "USD/2")) == 0


def test_same_idempotency_key_different_body_is_a_recorded_conflict() -> None:
    ledger = book()
    run(ledger, tx("1", ("@world", "alice", 5), key="k"))
    conflict = run(ledger, tx("2", ("@world", "alice", 6), key="k"))
    assert (conflict.status, conflict.reason, conflict.replay_of) == ("rejected", IDEMPOTENCY_CONFLICT, None)
    assert ledger.by_id[(T, "2")].reason == IDEMPOTENCY_CONFLICT
    assert ledger.by_key[(T, "k")].transaction_id == "1"
    assert ledger.balance((T, "alice", "USD/2")) == 5


def test_repeated_id_is_not_applied_twice() -> None:
    ledger = book()
    run(ledger, tx("1", ("@world", "alice", 5)))
    same = run(ledger, tx("1", ("@world", "alice", 5)))
    other = run(ledger, tx("1", ("@world", "alice", 9)))
    assert same.replay_of is not None and same.status == "committed"
    assert other.replay_of is not None and other.reason == IDEMPOTENCY_CONFLICT
    assert ledger.balance((T, "alice", "USD/2")) == 5


def test_keys_and_balances_are_per_tenant() -> None:
    ledger = book()
    ledger.tenants["other"] = True
    run(ledger, tx("1", ("@world", "alice", 5), key="k"))
    other = TransferRequest(id="1", tenant="other", postings=(Posting("alice", "bob", 1, "USD/2"),),
                            idempotency_key="k")
    outcome = decide(ledger, other)
    assert (outcome.status, outcome.reason, outcome.replay_of) == ("rejected", INSUFFICIENT_FUNDS, None)


def test_fingerprint_ignores_the_id_but_not_the_body() -> None:
    a = tx("1", ("@world", "alice", 5), reference="r")
    assert a.fingerprint() == tx("2", ("@world", "alice", 5), reference="r").fingerprint()
    assert a.fingerprint() != tx("1", ("@world", "alice", 5), reference="s").fingerprint()


def test_a_request_for_a_tenant_not_created_is_unknown_tenant_and_changes_nothing() -> None:
    ledger = Ledger()
    outcome = run(ledger, tx("1", ("@world", "alice", 5)))
    assert (outcome.status, outcome.reason, outcome.entries) == ("rejected", UNKNOWN_TENANT, ())
    assert ledger.balances == {}
    # Its id is taken all the same: the same request again is a repeat of that decision.
    assert decide(ledger, tx("1", ("@world", "alice", 5))).replay_of is not None


def test_a_tenant_is_created_once() -> None:
    ledger = Ledger()
    create = TenantRequest("c1", T, "Acme")
    first = decide_tenant(ledger, create)
    ledger.apply_tenant(create, first)
    again = decide_tenant(ledger, TenantRequest("c2", T, "Other"))
    assert (first.status, again.status, again.reason) == ("committed", "rejected", TENANT_EXISTS)
    assert ledger.tenant_exists(T)


def test_a_repeat_under_a_new_id_takes_that_id_once() -> None:
    ledger = book()
    run(ledger, tx("1", ("@world", "alice", 5), key="k"))
    repeat = tx("2", ("@world", "alice", 5), key="k")
    outcome = decide(ledger, repeat)
    assert outcome.replay_of is not None
    assert ledger.remember_replay(repeat, outcome.replay_of)
    assert not ledger.remember_replay(repeat, outcome.replay_of)
    assert ledger.decided_id(T, "2") == outcome.replay_of


def test_a_repeat_id_reused_with_another_body_conflicts_and_is_not_recorded() -> None:
    ledger = book()
    run(ledger, tx("1", ("@world", "alice", 5), key="k"))
    repeat = tx("2", ("@world", "alice", 5), key="k")
    outcome = run(ledger, repeat)
    ledger.remember_replay(repeat, outcome.replay_of)  # type: ignore[arg-type]
    reuse = run(ledger, tx("2", ("@world", "alice", 6)))
    # The id "2" stands for the original: a different body under it conflicts, with nothing to record.
    assert (reuse.status, reuse.reason) == ("rejected", IDEMPOTENCY_CONFLICT)
    assert reuse.replay_of is not None and reuse.replay_of.transaction_id == "1"


def test_a_key_used_for_a_tenant_not_created_binds_nothing() -> None:
    ledger = Ledger()
    run(ledger, tx("1", ("@world", "alice", 5), key="k"))
    ledger.tenants[T] = True
    # The tenant exists now: the same key with another body is a new request, not a conflict.
    outcome = run(ledger, tx("2", ("@world", "alice", 6), key="k"))
    assert (outcome.status, outcome.replay_of) == ("committed", None)
