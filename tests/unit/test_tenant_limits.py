"""Fair shares between tenants, the pure parts (api/limits.py): token buckets, a process's share, fair
admission when the process is full, the limits body, and the 429's headers."""

from __future__ import annotations

import contextlib
import math
import time

import pytest

from api.limits import (
    ADJUST_S,
    HELD_TENANT_MAX,
    HOLD_S,
    READS,
    REFUSALS_AT_ONCE,
    THROTTLE_BURST_S,
    THROTTLE_CUT,
    THROTTLE_STEP,
    WRITES,
    Bucket,
    Cadence,
    Limits,
    RateLimited,
    TenantLimits,
    parse_limits,
)
from ledger.errors import InvalidRequest

DEFAULTS = Limits(writes_per_s=10, reads_per_s=100, burst_s=2)
VICTIM_WAITS = frozenset({"victim"})  # whose appends have waited too long to be applied (`TenantLimits.adjust`)
NOBODY_WAITS: frozenset[str] = frozenset()


def test_a_bucket_holds_its_burst_then_refills_at_its_rate() -> None:
    bucket = Bucket(rate=10, burst_s=2, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(20)] == [0.0] * 20
    assert bucket.take(1, 0.0) == pytest.approx(0.1)  # empty: one token comes in 0.1 s
    assert bucket.take(1, 0.1) == 0.0
    assert bucket.take(5, 0.2) == pytest.approx(0.4)  # 1 token there, 4 more needed


def test_a_request_larger_than_the_bucket_passes_when_it_is_full_and_leaves_a_debt() -> None:
    bucket = Bucket(rate=10, burst_s=2, now=0.0)
    assert bucket.take(1000, 0.0) == 0.0
    assert bucket.take(1, 1.0) > 0  # 980 tokens owed: refused until they are paid back
    assert bucket.take(1, 99.0) == 0.0


def test_limits_refuse_with_429_and_the_ietf_headers_and_each_kind_apart() -> None:
    limits = TenantLimits(DEFAULTS, inflight_fair=64)
    for _ in range(20):
        limits.admit("acme", WRITES, now=0.0)
    with pytest.raises(RateLimited) as refused:
        limits.admit("acme", WRITES, now=0.0)
    assert refused.value.headers() == {"Retry-After": "1", "RateLimit-Policy": '"writes";q=10;w=1',
                                       "RateLimit": '"writes";r=0;t=1'}
    limits.admit("acme", READS, now=0.0)  # reads have their own bucket
    limits.admit("other", WRITES, now=0.0)  # and every tenant its own


def test_two_processes_enforce_half_each() -> None:
    limits = TenantLimits(DEFAULTS, inflight_fair=64)
    limits.set_processes(2)
    admitted = 0
    for _ in range(40):
        try:
            limits.admit("acme", WRITES, now=0.0)
            admitted += 1
        except RateLimited:
            pass
    assert admitted == 10  # half of the 2 s burst of 10/s


def test_an_operators_limits_replace_the_defaults_and_start_anew() -> None:
    limits = TenantLimits(DEFAULTS, inflight_fair=64)
    limits.set("acme", Limits(1, 1, 1))
    limits.admit("acme", WRITES, now=0.0)
    with pytest.raises(RateLimited):
        limits.admit("acme", WRITES, now=0.0)
    limits.set("acme", None)
    limits.admit("acme", WRITES, now=0.0)


def test_a_full_process_sheds_the_tenant_past_its_share_and_admits_the_others() -> None:
    limits = TenantLimits(DEFAULTS, inflight_fair=4)
    held = [limits.slot("flood") for _ in range(4)]
    for slot in held:
        slot.__enter__()
    with pytest.raises(RateLimited):  # full, and the flood holds every place
        limits.slot("flood").__enter__()
    victim = limits.slot("victim")
    victim.__enter__()  # the victim holds none: admitted
    victim.__exit__(None, None, None)
    for slot in held:
        slot.__exit__(None, None, None)
    assert limits.total_inflight == 0 and limits.inflight == {}


@pytest.mark.parametrize("body", [[], {"writes_per_s": 0}, {"reads_per_s": "5"}, {"burst_s": True},
                                  {"burst_s": 3601}, {"writes": 5}, {"writes_per_s": 10**8}])
def test_bad_limits_are_refused(body: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_limits(body, DEFAULTS)


def test_a_limits_body_changes_only_what_it_names() -> None:
    assert parse_limits({"reads_per_s": 7}, DEFAULTS) == Limits(10, 7, 2)


def test_while_the_ledger_is_behind_the_tenant_writing_well_past_its_share_is_throttled() -> None:
    limits = TenantLimits(Limits(10_000, 10_000, 2), inflight_fair=64)
    for n in range(200):
        limits.admit("flood", WRITES, now=0.5 + n / 1000)
    for _ in range(5):
        limits.admit("victim", WRITES, now=0.8)
    limits.adjust(VICTIM_WAITS, now=0.9)
    assert set(limits.throttled) == {"flood"}
    cut = 200 * THROTTLE_CUT
    assert limits.throttled["flood"].rate == pytest.approx(cut)  # its last second's rate, cut
    admitted = 0
    with pytest.raises(RateLimited) as refused:
        for _ in range(100):
            limits.admit("flood", WRITES, now=0.9)
            admitted += 1
    assert admitted == int(cut * THROTTLE_BURST_S), "the throttled rate's burst"
    assert refused.value.policy is None, "shed, not past its own limit"
    limits.admit("victim", WRITES, now=0.9)  # well within its share: never throttled
    limits.adjust(VICTIM_WAITS, now=0.95)
    assert limits.throttled["flood"].rate == pytest.approx(cut * THROTTLE_CUT), "cut again while still behind"
    for n in range(10):  # the flood keeps asking: its throttle grows back a step each time nothing waits
        with contextlib.suppress(RateLimited):
            for _ in range(100):
                limits.admit("flood", WRITES, now=0.95 + n / 20)
        limits.adjust(NOBODY_WAITS, now=0.95 + n / 20)
    assert limits.throttled["flood"].rate == pytest.approx(cut * THROTTLE_CUT + 10 * THROTTLE_STEP)
    limits.adjust(NOBODY_WAITS, now=3.0)  # the flood is over: nothing written lately, so no throttle
    assert limits.throttled == {}


def test_a_tenant_that_wrote_a_few_seconds_ago_has_a_share_and_a_lone_writer_is_never_throttled() -> None:
    limits = TenantLimits(Limits(10_000, 10_000, 2), inflight_fair=64)
    limits.admit("victim", WRITES, now=1.0)
    for n in range(200):  # a flood starts 5 s later, before the victim's next write
        limits.admit("flood", WRITES, now=6.0 + n / 1000)
    limits.adjust(frozenset({"victim", "flood"}), now=6.5)  # its next write waits behind the flood
    assert set(limits.throttled) == {"flood"}
    limits.adjust(NOBODY_WAITS, now=20.0)
    assert limits.throttled == {}
    for n in range(200):  # the victim's last write is past `WRITERS_S`: the flood writes alone
        limits.admit("flood", WRITES, now=20.0 + n / 1000)
    limits.adjust(frozenset({"flood"}), now=20.5)
    assert limits.throttled == {}, "a tenant writing alone has nobody to give a share to"


def test_a_tenant_alone_with_a_long_backlog_is_throttled_until_it_is_short() -> None:
    """Alone, a tenant can append faster than the projector applies; whoever writes next waits behind its
    backlog. So a tenant with too many appends not applied (`backlogged`) is throttled whoever else writes, and
    grows back only once its backlog is short; one with many writes but a short backlog (waited writes: one
    each per connection) is not."""
    limits = TenantLimits(Limits(10_000, 10_000, 2), inflight_fair=64)
    for n in range(400):
        limits.admit("flood", WRITES, now=20.0 + n / 1000)
    limits.adjust(frozenset({"flood"}), now=20.5)
    assert limits.throttled == {}, "its own writes wait, but its backlog is short"
    limits.adjust(NOBODY_WAITS, now=20.55, backlogged=frozenset({"flood"}))
    assert set(limits.throttled) == {"flood"}
    cut = limits.throttled["flood"].rate
    limits.adjust(NOBODY_WAITS, now=20.6, backlogged=frozenset({"flood"}))
    assert limits.throttled["flood"].rate == pytest.approx(cut * THROTTLE_CUT), "cut again, not grown"
    limits.adjust(NOBODY_WAITS, now=20.65)
    assert limits.throttled["flood"].rate == pytest.approx(cut * THROTTLE_CUT + THROTTLE_STEP)
    limits.adjust(NOBODY_WAITS, now=20.7, backlogged=frozenset({"few"}))  # a tenant that wrote nothing here
    assert set(limits.throttled) == {"flood"}


def test_a_burst_of_its_own_that_only_its_own_writes_wait_on_is_not_throttled() -> None:
    limits = TenantLimits(Limits(10_000, 10_000, 2), inflight_fair=64)
    for n in range(200):
        limits.admit("burst", WRITES, now=0.5 + n / 1000)
    limits.admit("other", WRITES, now=0.8)  # wrote, and was applied in time
    limits.adjust(frozenset({"burst"}), now=0.9)
    assert limits.throttled == {}
    limits.adjust(frozenset({"burst", "other"}), now=0.95)  # now another tenant's write waits on it
    assert set(limits.throttled) == {"burst"}


def test_a_throttle_is_gone_once_it_reaches_the_tenants_limit() -> None:
    limits = TenantLimits(Limits(300, 10_000, 2), inflight_fair=64)
    for n in range(250):
        limits.admit("flood", WRITES, now=0.5 + n / 1000)
    limits.admit("victim", WRITES, now=0.8)
    limits.adjust(VICTIM_WAITS, now=0.9)
    assert "flood" in limits.throttled
    steps = math.ceil((300 - limits.throttled["flood"].rate) / THROTTLE_STEP)
    for _ in range(steps - 1):
        limits.adjust(NOBODY_WAITS, now=0.9)
    assert "flood" in limits.throttled
    limits.adjust(NOBODY_WAITS, now=0.9)
    assert limits.throttled == {}


def test_tenants_writing_alike_are_never_throttled_however_behind() -> None:
    limits = TenantLimits(Limits(10_000, 10_000, 2), inflight_fair=64)
    tenants = [f"t{n}" for n in range(10)]
    for n in range(110):
        for i, t in enumerate(tenants):
            if n < 90 + 2 * i:  # 90 to 108 writes each: within 1.5 times the equal share
                limits.admit(t, WRITES, now=0.5 + n / 1000)
    limits.adjust(frozenset(tenants), now=0.9)
    assert limits.throttled == {}


def test_past_a_few_refusals_a_second_a_tenants_refusals_are_held_up_to_a_bound() -> None:
    limits = TenantLimits(Limits(1, 1, 1), inflight_fair=64, held_max=300)
    for _ in range(REFUSALS_AT_ONCE):
        assert limits.hold_s("flood") == 0
    holds = [limits.hold_s("flood") for _ in range(100)]
    assert all(HOLD_S / 2 <= h <= HOLD_S * 1.5 for h in holds)
    assert len(set(holds)) > 1, "held refusals come back spread, not as one burst"
    assert limits.hold_s("other") == 0, "each tenant has its own refusals at once"
    with contextlib.ExitStack() as held:
        for _ in range(HELD_TENANT_MAX):
            held.enter_context(limits.holding("flood"))
        assert limits.hold_s("flood") == 0, "past its bound of held refusals, a tenant's are answered at once"
        for _ in range(300 - HELD_TENANT_MAX):
            held.enter_context(limits.holding("other"))
        assert [limits.hold_s("other") for _ in range(REFUSALS_AT_ONCE + 1)][-1] == 0, "the process's bound"
    assert limits.total_held == 0 and limits.held == {}
    limits.admit("flood", READS, now=time.monotonic() + 2)  # a new second: the count starts again
    assert limits.hold_s("flood") == 0


def test_csv_is_asked_by_a_media_range_of_quality_above_zero_and_cells_are_not_formulas() -> None:
    from api.routes.accounts import _cell, wants_csv

    assert wants_csv("text/csv") and wants_csv("application/json, text/csv;q=0.5") and wants_csv("TEXT/CSV")
    assert not wants_csv(None) and not wants_csv("application/json, text/csv;q=0") and not wants_csv("text/csvx")
    assert [_cell(x) for x in ("-2-3", "=A1", "@x", "ok-1", "+1")] == ["'-2-3", "'=A1", "'@x", "ok-1", "'+1"]


def test_a_tenant_newly_waiting_is_acted_on_at_once_then_on_the_cadence() -> None:
    """`Cadence`: adjustments every `ADJUST_S`; a tenant found waiting that no adjustment saw since the last
    scheduled one brings one forward, once per tenant and `ADJUST_S` (a flood's first cut does not wait for
    the next scheduled adjustment while the victim's writes wait)."""
    step = ADJUST_S / 5
    cadence = Cadence(now=0.0)
    assert not cadence.due(set(), step)  # nobody waits: only on schedule
    assert cadence.due({"flood"}, step)  # newly waiting: at once
    assert not cadence.due({"flood"}, 2 * step)  # seen already: on schedule
    assert cadence.due({"flood", "victim"}, 2 * step)  # another newly waiting: at once
    assert not cadence.due({"victim"}, 3 * step) and not cadence.due({"flood"}, 4 * step)
    assert cadence.due(set(), ADJUST_S)  # the schedule, whoever waits
    assert not cadence.due(set(), ADJUST_S + step)
    assert cadence.due({"victim"}, ADJUST_S + step)  # nobody waited at the last scheduled one: at once again
    assert not cadence.due({"victim"}, ADJUST_S + 2 * step)
    assert cadence.due({"victim"}, 2 * ADJUST_S)
    assert not cadence.due({"victim"}, 2 * ADJUST_S + step)  # waited at the scheduled one: not brought forward


def test_a_victims_first_wait_cuts_the_flood_without_waiting_for_the_schedule() -> None:
    """The cadence and the cut together: a flood writing alone is cut at the first check that finds the
    victim waiting, not up to `ADJUST_S` later."""
    limits = TenantLimits(Limits(writes_per_s=100_000, reads_per_s=100, burst_s=2), inflight_fair=256)
    cadence = Cadence(now=0.0)
    now = 0.0
    for _ in range(2_000):  # the flood alone, 2,000 writes in its first 0.2 s
        now += 0.0001
        limits.admit("flood", WRITES, now=now)
    limits.admit("victim", WRITES, now=now)
    assert cadence.due(set(), now) and not limits.throttled  # the schedule: nobody waits yet
    now += 0.01
    assert cadence.due({"victim"}, now)  # 10 ms later, before the next scheduled adjustment
    limits.adjust(VICTIM_WAITS, now)
    assert "flood" in limits.throttled and "victim" not in limits.throttled
