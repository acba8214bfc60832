"""The balance cache's rules, and the notifications that keep it current, without services."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.cache import BalanceCache
from ledger import changes
from ledger.changes import PAYLOAD_MAX, account_key, payloads


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> bool:
        return self.ok


def cache(capacity: int = 10) -> tuple[BalanceCache, Health]:
    health = Health()
    return BalanceCache(capacity, health), health


def test_an_answer_read_undisturbed_is_served_next_time() -> None:
    c, _ = cache()
    assert c.get("t", "a") is None
    ticket = c.reading("t", "a")
    c.fill(ticket, "t", "a", b"A1")
    assert c.get("t", "a") == b"A1"
    assert (c.hits, c.misses) == (1, 1)


def test_a_change_notified_during_the_read_keeps_the_answer_out() -> None:
    # The read's snapshot may predate the batch the notification announces.
    c, _ = cache()
    ticket = c.reading("t", "a")
    c.changed([account_key("t", "a")])
    c.fill(ticket, "t", "a", b"old")
    assert c.get("t", "a") is None
    # The next read, begun after the notification, is kept.
    ticket = c.reading("t", "a")
    c.fill(ticket, "t", "a", b"new")
    assert c.get("t", "a") == b"new"


def test_a_change_spoils_every_read_in_flight_of_the_account_until_they_are_all_done() -> None:
    c, _ = cache()
    first = c.reading("t", "a")
    c.changed([account_key("t", "a")])
    second = c.reading("t", "a")  # may have started before the batch committed, too: conservative
    c.fill(first, "t", "a", b"x")
    c.fill(second, "t", "a", b"y")
    assert c.get("t", "a") is None
    third = c.reading("t", "a")
    c.fill(third, "t", "a", b"z")
    assert c.get("t", "a") == b"z"


def test_a_change_drops_the_account_and_no_other() -> None:
    c, _ = cache()
    for account in ("a", "b"):
        c.fill(c.reading("t", account), "t", account, account.encode())
    c.changed([account_key("t", "a")])
    assert c.get("t", "a") is None
    assert c.get("t", "b") == b"b"


def test_dropping_all_spoils_reads_begun_before() -> None:
    c, _ = cache()
    c.fill(c.reading("t", "a"), "t", "a", b"A")
    ticket = c.reading("t", "b")
    c.drop_all()  # the listener reconnected: notifications may have been missed
    c.fill(ticket, "t", "b", b"B")
    assert c.get("t", "a") is None and c.get("t", "b") is None


def test_nothing_is_served_or_kept_while_notifications_may_not_flow() -> None:
    c, health = cache()
    c.fill(c.reading("t", "a"), "t", "a", b"A")
    health.ok = False
    assert c.get("t", "a") is None
    c.fill(c.reading("t", "b"), "t", "b", b"B")
    health.ok = True
    assert c.get("t", "b") is None


def test_an_abandoned_read_leaves_nothing_behind() -> None:
    c, _ = cache()
    ticket = c.reading("t", "a")
    c.changed([account_key("t", "a")])
    c.abandon(ticket)
    assert not c._reading and not c._named


def test_the_cache_holds_at_most_its_capacity_oldest_out_first() -> None:
    c, _ = cache(capacity=3)
    for n in range(5):
        c.fill(c.reading("t", f"a{n}"), "t", f"a{n}", b"x")
    assert len(c) == 3
    assert c.get("t", "a0") is None and c.get("t", "a4") == b"x"


def test_a_disabled_cache_keeps_nothing() -> None:
    c, _ = cache(capacity=0)
    c.fill(c.reading("t", "a"), "t", "a", b"A")
    assert c.get("t", "a") is None and len(c) == 0


def test_tenants_do_not_share_an_account() -> None:
    c, _ = cache()
    c.fill(c.reading("t1", "a"), "t1", "a", b"one")
    assert c.get("t2", "a") is None
    assert account_key("t1", "a") != account_key("t2", "a")


@given(st.dictionaries(st.integers(0, 1023), st.integers(0, 2**63 - 1), max_size=1024),
       st.sets(st.integers(0, 2**64 - 1), max_size=3000))
def test_payloads_fit_postgres_and_say_everything_changes_first(offsets: dict[int, int], changed: set[int]) -> None:
    out = payloads(offsets, changed)
    assert out and all(len(p.encode()) <= PAYLOAD_MAX for p in out)
    parsed = [changes.parse(p) for p in out]
    seen_offsets = False
    got_changed: list[int] = []
    got_offsets: dict[int, int] = {}
    for p in parsed:
        assert not p.reset
        if p.changed:
            assert not seen_offsets, "an account change after an advance"
        seen_offsets = seen_offsets or bool(p.offsets)
        got_changed += p.changed
        got_offsets |= p.offsets
    assert set(got_changed) == changed and got_offsets == offsets


def test_a_full_payload_of_changes_is_just_under_the_limit() -> None:
    one = payloads({}, range(changes.KEYS_PER_PAYLOAD))
    assert len(one) == 2 and len(one[0]) <= PAYLOAD_MAX  # the changes, then the (empty) offsets
    assert len(payloads({}, range(changes.KEYS_PER_PAYLOAD + 1))) == 3


def test_a_bare_offsets_map_from_an_older_projector_resets_the_cache() -> None:
    parsed = changes.parse(orjson.dumps({"0": 12, "3": 4}).decode())
    assert parsed.reset and parsed.offsets == {0: 12, 3: 4} and parsed.changed == []
    assert changes.parse(changes.reset_payload()).reset


@pytest.mark.parametrize("payload", ["", "[]", "null", '{"changed": "***"}', '{"changed": "AAAA"}',
                                     '{"offsets": [1]}', '{"offsets": {"x": 1}}', '{"0": "x"}', "marker"])
def test_a_payload_not_understood_is_a_value_error(payload: str) -> None:
    with pytest.raises(ValueError):
        changes.parse(payload)
