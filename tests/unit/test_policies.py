"""Account policies, decided in log order with the money (pure)."""

from __future__ import annotations

from ledger.memory import Ledger
from ledger.reasons import ACCOUNT_FROZEN, INSUFFICIENT_FUNDS, OVERDRAFT_IN_USE
from ledger.requests import (
    CAPTURE,
    VOID,
    PolicyRequest,
    TransactionRequest,
)
from tests.unit.test_holds import USD, T, act, book, hold, run, transfer


def policy(id: str, account: str, limits: dict[str, int] | None = None, frozen: bool = False) -> TransactionRequest:
    return PolicyRequest(id=id, tenant=T, limits=tuple(sorted((limits or {}).items())), frozen=frozen,
                         metadata={"tier": "gold"}, account=account)


def test_an_overdraft_limit_lets_available_go_that_far_below_zero_and_no_further() -> None:
    ledger = book()  # alice has 100
    assert run(ledger, transfer("t1", "alice", "bob", 101)).reason == INSUFFICIENT_FUNDS
    assert run(ledger, policy("p1", "alice", {USD: 50})).status == "committed"
    assert run(ledger, transfer("t2", "alice", "bob", 150)).status == "committed"
    assert ledger.balance((T, "alice", USD)) == -50
    assert run(ledger, transfer("t3", "alice", "bob", 1)).reason == INSUFFICIENT_FUNDS
    assert run(ledger, hold("h1", ("alice", "shop", 1))).reason == INSUFFICIENT_FUNDS
    # An overdraft in use is paid back before the limit that allows it is lowered.
    assert run(ledger, policy("p2", "alice")).reason == OVERDRAFT_IN_USE
    assert run(ledger, policy("p3", "alice", {USD: 49})).reason == OVERDRAFT_IN_USE
    assert run(ledger, transfer("t4", "@world", "alice", 50)).status == "committed"
    assert run(ledger, policy("p4", "alice")).status == "committed"
    assert run(ledger, transfer("t5", "alice", "bob", 1)).reason == INSUFFICIENT_FUNDS


def test_a_frozen_account_takes_part_in_nothing_new_but_its_holds_still_release() -> None:
    ledger = book()
    run(ledger, hold("h1", ("alice", "shop", 10)))
    run(ledger, hold("h2", ("alice", "shop", 10), expires_in_s=1))
    run(ledger, hold("h3", ("alice", "shop", 10)))
    run(ledger, policy("p1", "alice", frozen=True))
    for request in (transfer("t1", "alice", "bob", 1), transfer("t2", "@world", "alice", 1),
                    hold("h4", ("alice", "shop", 1)), act("c1", CAPTURE, "h1")):
        assert run(ledger, request).reason == ACCOUNT_FROZEN, request.id
    assert run(ledger, act("v1", VOID, "h3")).status == "committed"
    run(ledger, transfer("t3", "@world", "carol", 1), now_ms=1000)  # h2 expires on its partition's time
    assert ledger.holds[(T, "h2")].state == "expired"
    assert ledger.held_of((T, "alice", USD)) == 10  # only h1 is still open
    run(ledger, policy("p2", "alice"))
    assert run(ledger, act("c2", CAPTURE, "h1")).status == "committed"


def test_a_policy_is_remembered_per_account_and_tenant() -> None:
    ledger = Ledger(tenants={T: True, "other": True})
    run(ledger, policy("p1", "alice", {USD: 5}, frozen=True))
    assert ledger.policy(T, "alice").frozen and ledger.policy(T, "alice").limits == {USD: 5}
    assert not ledger.policy("other", "alice").frozen and ledger.policy(T, "bob").limits == {}
