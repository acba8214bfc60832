"""Who waits on the projection (`Appender.waiting`, the signal of fair admission): each tenant whose append
waited too long to be applied, found without scanning a backlog."""

from __future__ import annotations

import collections
import time

from api.appender import OWN_PENDING_MAX, Appender
from ledger.positions import Position


def test_who_waits_is_found_without_scanning_a_backlog() -> None:
    """`Appender.waiting`: applied appends that waited too long name their tenants once; of a backlog still
    waiting, each partition's oldest are looked at, and no more once two tenants are found."""
    appender = Appender("127.0.0.1:1", "ledger.transactions")
    for offset in range(50_000):  # a flood's backlog on partition 0, all acknowledged at t=0
        appender._own(Position(0, offset), "flood")
    appender._own(Position(1, 0), "victim")
    for partition, deque in appender.own.items():  # acknowledged at t=0: set the times by hand
        appender.own[partition] = collections.deque([(o, 0.0, t, w) for o, _, t, w in deque])
    assert appender.backlogged(49_999) == {"flood"} and appender.backlogged(50_000) == frozenset()
    assert appender.waiting({}, 10.0, 1.0, pending=False) == set()  # nothing applied yet
    assert appender.waiting({}, 10.0, 1.0) == {"flood", "victim"}  # the victim, past the flood's backlog
    assert appender.waiting({}, 0.5, 1.0) == set()  # nobody has waited a second yet
    assert appender.waiting({0: 10, 1: 1}, 10.0, 1.0, pending=False) == {"flood", "victim"}  # applied late
    assert len(appender.own[0]) == 49_990 and not appender.own[1]
    assert appender.unapplied == {"flood": 49_990}  # the applied ones no longer count in the backlog


def test_a_backlog_is_counted_per_tenant_and_bounded() -> None:
    """`Appender.backlogged`: a tenant's appends not yet applied; past `OWN_PENDING_MAX` on a partition the
    oldest are forgotten, and no longer counted."""
    appender = Appender("127.0.0.1:1", "ledger.transactions")
    for offset in range(OWN_PENDING_MAX):
        appender._own(Position(0, offset), "flood")
    for offset in range(OWN_PENDING_MAX, OWN_PENDING_MAX + 10):
        appender._own(Position(0, offset), "victim")
    appender._own(Position(1, 0), "waiter", waited=True)  # its client waits: not a backlog
    assert appender.unapplied == {"flood": OWN_PENDING_MAX - 10, "victim": 10}
    assert appender.backlogged(10) == {"flood"} and appender.backlogged(9) == {"flood", "victim"}
    appender.waiting({0: OWN_PENDING_MAX + 5, 1: 1}, 0.0, 1.0, pending=False)
    assert appender.unapplied == {"victim": 5} and not appender.own[1]


def test_waiting_looks_at_a_bounded_part_of_a_backlog_of_one_tenant() -> None:
    appender = Appender("127.0.0.1:1", "ledger.transactions")
    appender.own[0] = collections.deque([(o, 0.0, "flood", False) for o in range(40_000)])
    appender.own[0].append((40_000, 0.0, "victim", True))  # past the share of the scan: not looked at
    assert appender.waiting({}, 10.0, 1.0) == {"flood"}


def test_an_append_waits_from_when_it_was_sent() -> None:
    """A slow acknowledgement by Kafka is part of what the client waits: the wait counts from the send."""
    appender = Appender("127.0.0.1:1", "ledger.transactions")
    sent = time.monotonic() - 0.5  # acknowledged only now, half a second after it was sent
    appender._own(Position(0, 0), "victim", waited=True, since=sent)
    assert appender.waiting({}, time.monotonic(), 0.4) == {"victim"}
