"""Which events an outcome makes, their ids, and the retry schedule: pure."""

from __future__ import annotations

import random

from dispatch.deliveries import GIVE_UP_AFTER, RETRY
from dispatch.events import events_of, wanted

KEY = bytes(range(32))


def outcome(**fields: object) -> dict[str, object]:
    return {"tenant": "acme", "id": "tx1", "status": "committed", "reason": None, "position": "tok",
            "record": "2-17", "kind": "transfer", **fields}


def test_each_decision_makes_its_event_type() -> None:
    cases = [({}, ["transaction.committed"]), ({"kind": "reverse"}, ["transaction.committed"]),
             ({"kind": "hold"}, ["hold.created"]), ({"kind": "capture"}, ["hold.captured"]),
             ({"kind": "void"}, ["hold.voided"]), ({"kind": "hold", "status": "expired"}, ["hold.expired"]),
             ({"status": "rejected", "reason": "insufficient_funds"}, ["transaction.rejected"]),
             ({"status": "rejected", "reason": "invalid", "kind": None}, ["transaction.rejected"]),
             ({"kind": "policy"}, []), ({"kind": "monitor"}, []), ({"kind": "tenant"}, []),
             ({"status": "rejected", "reason": "wrong_partition"}, []),
             ({"original_id": "tx0"}, []), ({"tenant": None}, []), ({"id": None}, [])]
    for fields, types in cases:
        assert [e.type for e in events_of(outcome(**fields), KEY)] == types, fields


def test_crossings_are_events_of_their_own_with_distinct_stable_ids() -> None:
    crossings = [{"monitor": "m1", "direction": "below"}, {"monitor": "m2", "direction": "above"}]
    events = events_of(outcome(crossings=crossings), KEY)
    assert [e.type for e in events] == ["transaction.committed", "balance.crossed", "balance.crossed"]
    assert [e.crossing for e in events[1:]] == crossings
    assert len({e.id for e in events}) == 3
    assert [e.id for e in events_of(outcome(crossings=crossings), KEY)] == [e.id for e in events]
    # Derived from the place in the log, keyed: another record, or another key, makes other ids.
    assert events_of(outcome(record="2-18"), KEY)[0].id != events[0].id
    assert events_of(outcome(), bytes(32))[0].id != events[0].id
    assert all(e.id.startswith("evt_") and "2-17" not in e.id for e in events)


def test_subscriptions() -> None:
    assert wanted(frozenset({"*"}), "hold.created")
    assert wanted(frozenset({"hold.created"}), "hold.created")
    assert not wanted(frozenset({"hold.created"}), "transaction.committed")


def test_the_first_retry_is_within_10_s_and_retries_last_past_a_day() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert 2.5 <= RETRY.delay(1, rng) <= 5.0
        assert RETRY.delay(40, rng) <= 3600
    total, attempts = 0.0, 0
    while total < GIVE_UP_AFTER.total_seconds():
        attempts += 1
        total += RETRY.delay(attempts, rng)
    assert 20 <= attempts <= 60  # about hourly once the backoff reaches its cap
