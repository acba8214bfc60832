"""The batch planner, pure: what each step of the preload asks for, and that a ledger already holding it
asks for nothing more."""

from __future__ import annotations

from ledger.batch import Decoded, Invalid
from ledger.memory import Ledger
from ledger.plan import Needs
from ledger.positions import Position
from ledger.requests import (
    Assertion,
    BatchRequest,
    CaptureRequest,
    MonitorRequest,
    PolicyRequest,
    Posting,
    ReverseRequest,
    TenantRequest,
    TransferRequest,
    UnmonitorRequest,
    VoidRequest,
    Watch,
)
from ledger.state import NO_POLICY, Decided, Hold, Monitor, Original

T = "acme"
USD = "USD/2"
HERE = Position(0, 1)


def batch() -> list[Decoded]:
    return [
        TransferRequest(id="t1", tenant=T, postings=(Posting("alice", "bob", 5, USD),), idempotency_key="k1",
                        if_version=(("zed", 2),), asserts=(Assertion("carol", USD, 0, None),)),
        CaptureRequest(id="c1", tenant=T, hold="h1-retry"),
        VoidRequest(id="v1", tenant=T, hold="h2"),
        ReverseRequest(id="r1", tenant=T, transaction="t0"),
        PolicyRequest(id="p1", tenant=T, account="dave", limits=((USD, 100),)),
        MonitorRequest(id="m1", tenant=T, watch=Watch("erin", USD, 10, None)),
        UnmonitorRequest(id="u1", tenant=T, monitor="m0"),
        BatchRequest("b1", "globex", (TransferRequest(id="b1a", tenant="globex",
                                                      postings=(Posting("@world", "x", 1, USD),)),), "bk"),
        TenantRequest(id="n1", tenant="initech", name="Initech"),
        Invalid("unreadable", (T, "bad1")),
    ]


def test_ids_and_what_requests_name_are_asked_first_and_a_repeats_id_resolves_to_its_original() -> None:
    needs = Needs(batch())
    ledger = Ledger()
    assert needs.batch_ids(ledger) == {("globex", "b1")}
    assert needs.decided_ids(ledger) == {(T, i) for i in ("t1", "c1", "v1", "r1", "p1", "m1", "u1", "bad1",
                                                          "h1-retry", "h2", "t0", "dave", "m0")} | {("globex", "b1a")}
    ledger.by_id[(T, "h1-retry")] = Decided("h1", "committed", None, b"", HERE)
    assert needs.holds(ledger) == {(T, "h1"), (T, "h2")}
    assert needs.monitors(ledger) == {(T, "m0")}
    assert needs.originals(ledger) == {(T, "t0")}
    assert needs.keys(ledger) == {(T, "k1"), ("globex", "bk")}
    assert sorted(needs.unknown_tenants(ledger)) == ["acme", "globex", "initech"]


def test_accounts_and_balances_follow_what_moves_and_what_is_named() -> None:
    needs = Needs(batch())
    ledger = Ledger(tenants={T: True})
    ledger.track(Hold(T, "h2", (Posting("frank", "gina", 3, USD),), 10**12, HERE))
    ledger.originals[(T, "t0")] = Original("transfer", "committed", (Posting("ivy", "jo", 2, USD),))
    ledger.learn_monitor(Monitor(T, "m0", Watch("kim", USD, None, 5)))
    moved = needs.moved(ledger, {(T, "held", USD)})
    assert {(T, a, USD) for a in ("alice", "bob", "carol", "frank", "gina", "ivy", "jo", "dave", "erin", "kim",
                                  "held")} <= moved
    assert ("globex", "x", USD) in moved  # a batch's items are requests of their own
    accounts = needs.accounts(ledger, moved)
    assert {(T, "zed"), (T, "dave"), (T, "alice")} <= accounts  # `if_version` names an account nothing moves
    for account in accounts:
        ledger.policies.setdefault(account, NO_POLICY)
    assert needs.accounts(ledger, moved) == set()
    wanted = needs.balances(ledger, moved)
    assert wanted == moved
    ledger.balances.update(dict.fromkeys(wanted, 0))
    assert needs.balances(ledger, moved) == set()


def test_a_ledger_that_holds_everything_is_asked_for_nothing() -> None:
    needs = Needs(batch())
    ledger = Ledger(tenants={T: True, "globex": True, "initech": False})
    for tenant, id in needs.decided_ids(ledger):
        ledger.by_id[(tenant, id)] = Decided(id, "committed", None, b"", HERE)
    ledger.batches[("globex", "b1")] = ("b1a",)
    ledger.track(Hold(T, "h1-retry", (), 0, HERE))
    ledger.track(Hold(T, "h2", (), 0, HERE))
    ledger.learn_monitor(Monitor(T, "m0", Watch("kim", USD, None, 5)))
    ledger.originals[(T, "t0")] = Original("transfer", "committed", ())
    for tenant, key in needs.keys(ledger):
        ledger.by_key[(tenant, key)] = Decided("x", "committed", None, b"", HERE)
    ledger.chains.update({t: (0, "") for t in (T, "globex", "initech")})
    assert (needs.batch_ids(ledger), needs.decided_ids(ledger), needs.holds(ledger), needs.monitors(ledger),
            needs.originals(ledger), needs.keys(ledger), needs.unchained(ledger), needs.unknown_tenants(ledger)) \
        == (set(), set(), set(), set(), set(), set(), [], [])
