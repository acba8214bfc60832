"""Fair shares between tenants (contract v3): per-tenant token buckets for writes and reads, a share of each
limit per live API process, refusals held past the first few of a second, fair admission when a process is
full, and the heaviest writer throttled while another tenant's writes wait on it. How and why, with the
measurements behind each rule: docs/fair-shares.md."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import Counter

from api import tally
from ledger.errors import InvalidRequest, LedgerError

WRITES = "writes"
READS = "reads"
PROCESS_TTL_S = 3.0
SHED_WRITES_MIN = 50  # writes in the last second below which a tenant is never shed
SHED_SHARE = 1.5  # throttle only past this many times its equal share: tenants writing alike never are
ADJUST_S = 0.05  # how often the app's monitor adjusts the throttled rates
THROTTLE_CUT = 0.5  # a throttled rate's cut each `ADJUST_S` the ledger is behind
THROTTLE_STEP = 2.5  # its growth in writes a second each `ADJUST_S` it is not (50 a second each second)
THROTTLE_FLOOR = 10.0  # writes a second a throttled tenant keeps
THROTTLE_BURST_S = 0.1
# The tenants that wrote in this many seconds share the process: a tenant writing now and then (20 a second,
# or one write every few seconds) has a share while a flood starts, before its next write.
WRITERS_S = 10.0
LIMIT_FIELDS = frozenset({"writes_per_s", "reads_per_s", "burst_s"})
ALL_TENANTS = "*"
REFUSED = Counter("ledger_api_rate_limited_total", "Requests refused 429 rate_limited, by tenant (a label only "
                  "with LEDGER_METRICS_TENANT_LABELS=1, else '*'), kind (reads, writes) and why (limit, shed)",
                  ["tenant", "kind", "reason"])
BURST_S_MAX = 3600
REFUSALS_AT_ONCE = 20  # a tenant's refusals a second answered at once; past them, each is held `HOLD_S`
HOLD_S = 0.25
HELD_TENANT_MAX = 256  # one tenant's held refusals at once; past it, answered at once
RATE_MAX = 10_000_000


class RateLimited(LedgerError):
    """429: past the tenant's limit (`retry_after_s` until the bucket holds enough), or shed as the heaviest
    tenant of a full API."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float, policy: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, math.ceil(retry_after_s))  # Retry-After: whole seconds, at least 1
        self.policy = policy  # the IETF RateLimit-Policy of the limit passed, if a limit was

    def headers(self) -> dict[str, str]:
        headers = {"Retry-After": str(self.retry_after_s)}
        if self.policy is not None:
            headers["RateLimit-Policy"] = self.policy
            name = self.policy.split(";", 1)[0]
            headers["RateLimit"] = f"{name};r=0;t={self.retry_after_s}"
        return headers


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits, as the contract names them."""

    writes_per_s: int
    reads_per_s: int
    burst_s: int

    def as_json(self) -> dict[str, int]:
        return {"writes_per_s": self.writes_per_s, "reads_per_s": self.reads_per_s, "burst_s": self.burst_s}


class Bucket:
    """A token bucket: `rate` tokens a second, holding at most `rate * burst_s`. A request of more tokens
    than the bucket can hold (a large batch) passes when the bucket is full and leaves it in debt, so the rate
    holds on average without refusing it for ever."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst_s: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst_s)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, n: int, now: float) -> float:
        """Take `n` tokens and return 0, or return the seconds until they could be taken (taking none)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        needed = min(float(n), self.capacity)
        if self.tokens >= needed:
            self.tokens -= n
            return 0.0
        return (needed - self.tokens) / self.rate if self.rate > 0 else float(BURST_S_MAX)


class TenantLimits:
    """The limits in force in this process, its share of them, and the tenants' requests in progress."""

    def __init__(self, defaults: Limits, inflight_fair: int, tenant_labels: bool = False,
                 held_max: int = 1024) -> None:
        self.defaults = defaults
        self.tenant_labels = tenant_labels
        # Writes admitted per tenant in this second and the one before: who is heaviest when the ledger is full.
        self.window_start = 0.0
        self.writes_now: dict[str, int] = {}
        self.writes_before: dict[str, int] = {}
        self.total_now = self.total_before = 0
        self.seen: dict[str, float] = {}  # when each tenant last wrote here, for `WRITERS_S`: who shares
        # The writes of the heaviest tenants, throttled below their limits while the ledger is behind (`adjust`).
        self.throttled: dict[str, Bucket] = {}
        self.custom: dict[str, Limits] = {}
        self.share = 1.0  # 1 / the live API processes
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.inflight_fair = inflight_fair
        self.inflight: dict[str, int] = {}
        self.total_inflight = 0
        # Refusals per tenant in the current second (from `window_start`), and those held now.
        self.refused_now: dict[str, int] = {}
        self.held: dict[str, int] = {}
        self.held_max = held_max
        self.total_held = 0

    def of(self, tenant: str) -> Limits:
        return self.custom.get(tenant, self.defaults)

    def set(self, tenant: str, limits: Limits | None) -> None:
        """The operator's limits for `tenant` (None: back to the defaults); its buckets start anew."""
        if limits is None:
            self.custom.pop(tenant, None)
        else:
            self.custom[tenant] = limits
        for kind in (WRITES, READS):
            self.buckets.pop((tenant, kind), None)

    def replace_all(self, custom: dict[str, Limits]) -> None:
        self.custom = custom
        self.buckets.clear()

    def set_processes(self, live: int) -> None:
        share = 1.0 / max(1, live)
        if share != self.share:
            self.share = share
            self.buckets.clear()  # refilled at the new rate; a tenant briefly gets a full burst again

    def admit(self, tenant: str, kind: str, n: int = 1, now: float | None = None) -> None:
        """Take `n` of the tenant's `kind` tokens, or raise `RateLimited`; while the ledger is saturated, a write
        of a tenant throttled while the ledger is behind (`adjust`) is refused past its throttled rate (shed)."""
        now = time.monotonic() if now is None else now
        self._roll(now)
        if kind == WRITES:
            self._shed(tenant, n, now)
        bucket = self.buckets.get((tenant, kind))
        limits = self.of(tenant)
        rate = limits.writes_per_s if kind == WRITES else limits.reads_per_s
        if bucket is None:
            bucket = self.buckets[(tenant, kind)] = Bucket(rate * self.share, limits.burst_s, now)
        wait = bucket.take(n, now)
        if wait:
            REFUSED.labels(tenant if self.tenant_labels else ALL_TENANTS, kind, "limit").inc()
            raise RateLimited(f"tenant {tenant!r} is past its limit of {rate} {kind} a second; retry later",
                              wait, f'"{kind}";q={rate};w=1')
        if kind == WRITES:
            self.writes_now[tenant] = self.writes_now.get(tenant, 0) + n
            self.total_now += n
            self.seen[tenant] = now

    def _roll(self, now: float) -> None:
        """A new second: this one's counts become the last one's."""
        if now - self.window_start >= 1.0:
            recent = now - self.window_start < 2.0
            self.writes_before, self.total_before = (self.writes_now, self.total_now) if recent else ({}, 0)
            self.writes_now, self.total_now = {}, 0
            self.refused_now = {}
            self.window_start = now
            self.seen = {t: at for t, at in self.seen.items() if now - at < WRITERS_S}

    def _shed(self, tenant: str, n: int, now: float) -> None:
        """Refuse a write of a tenant whose writes are throttled (`adjust`) past its throttled rate."""
        throttle = self.throttled.get(tenant)
        if throttle is not None and throttle.take(n, now):
            REFUSED.labels(tenant if self.tenant_labels else ALL_TENANTS, WRITES, "shed").inc()
            raise RateLimited("the ledger is behind and this tenant is throttled: others wait on its writes, or "
                              "too many of them are not applied yet; retry", 1)

    def adjust(self, waiting: frozenset[str], now: float, backlogged: frozenset[str] = frozenset()) -> None:
        """Every `ADJUST_S` (the app's monitor), with the tenants whose appends here have waited too long to be
        applied (`waiting`) and those with too many of them not applied yet (`backlogged`): the rate of each
        tenant that others wait on is cut by `THROTTLE_CUT`, and each throttled rate grows by `THROTTLE_STEP` while
        nobody waits on it; the throttle is gone once it reaches the tenant's limit or twice what the tenant wrote
        lately (it no longer asks for more than the throttle lets through). Additive increase, multiplicative
        decrease: a flood settles at what the ledger applies in time for the others.

        Others wait on a tenant when another tenant's write waited and this one writes well past its equal share
        of the process's writes (`SHED_SHARE`; shared by the tenants that wrote in the last `WRITERS_S`), or when
        its own backlog of unwaited writes is long, whoever writes now: a tenant alone can push faster than the
        projector applies, and whoever writes next waits behind that backlog on the log. A tenant within its share
        is never throttled, nor one whose own writes wait but that has few unwaited ones in flight (waited writes
        are bounded by their connections and the waiters' limits). Shares are of the whole process, not of a
        partition: tenants on other partitions share its CPU and the machine's (`make bench`, step `fairness`)."""
        self._roll(now)
        span = max(1.0, now - self.window_start + (1.0 if self.writes_before else 0.0))
        def others_wait(tenant: str) -> bool:  # another tenant's write waited, whoever made it wait
            return len(waiting) > 1 or (bool(waiting) and tenant not in waiting)

        for tenant, throttle in list(self.throttled.items()):
            if tenant in backlogged or others_wait(tenant):
                continue  # others wait on it: cut below, not grown
            lately = (self.writes_now.get(tenant, 0) + self.writes_before.get(tenant, 0)) / span
            rate = throttle.rate + THROTTLE_STEP
            if rate >= self.of(tenant).writes_per_s * self.share or rate >= 2 * lately:
                del self.throttled[tenant]
            else:
                throttle.rate, throttle.capacity = rate, max(1.0, rate * THROTTLE_BURST_S)
        if not waiting and not backlogged:
            return
        writers = len(self.seen)
        total = self.total_now + self.total_before
        for tenant in self.writes_now.keys() | self.writes_before.keys():
            mine = self.writes_now.get(tenant, 0) + self.writes_before.get(tenant, 0)
            if mine <= SHED_WRITES_MIN:
                continue
            if tenant not in backlogged and not (others_wait(tenant) and mine * writers > SHED_SHARE * total):
                continue
            throttle = self.throttled.get(tenant)
            if throttle is None:
                throttle = self.throttled[tenant] = Bucket(mine / span, THROTTLE_BURST_S, now)
            throttle.rate = max(THROTTLE_FLOOR, throttle.rate * THROTTLE_CUT)
            throttle.capacity = max(1.0, throttle.rate * THROTTLE_BURST_S)

    def hold_s(self, tenant: str) -> float:
        """How long to hold a refusal of `tenant` before answering it: 0 for its first `REFUSALS_AT_ONCE` of the
        second, and whenever as many of its refusals (or of everyone's) are held as may be."""
        refused = self.refused_now[tenant] = self.refused_now.get(tenant, 0) + 1
        if refused <= REFUSALS_AT_ONCE or self.held.get(tenant, 0) >= HELD_TENANT_MAX \
                or self.total_held >= self.held_max:
            return 0.0
        return HOLD_S * (0.5 + random.random())  # spread: held connections must not come back as one burst

    @contextlib.contextmanager
    def holding(self, tenant: str) -> Iterator[None]:
        """A refusal of `tenant` held (counted against `HELD_TENANT_MAX` and `held_max`)."""
        tally.enter(self.held, tenant)
        self.total_held += 1
        try:
            yield
        finally:
            self.total_held -= 1
            tally.leave(self.held, tenant)

    @contextlib.contextmanager
    def slot(self, tenant: str, kind: str = WRITES) -> Iterator[None]:
        """A request of `tenant` in progress. Refused at once while the process is full and the tenant holds
        its equal share of the requests in progress already."""
        mine = self.inflight.get(tenant, 0)
        if self.total_inflight >= self.inflight_fair and mine >= max(1, self.inflight_fair // max(1, len(
                self.inflight))):
            REFUSED.labels(tenant if self.tenant_labels else ALL_TENANTS, kind, "shed").inc()
            raise RateLimited("the ledger is busy and this tenant has its share of it in progress; retry", 1)
        self.inflight[tenant] = mine + 1
        self.total_inflight += 1
        try:
            yield
        finally:
            self.total_inflight -= 1
            tally.leave(self.inflight, tenant)


class Cadence:
    """When `TenantLimits.adjust` runs: every `ADJUST_S`, and at once for a tenant found waiting that no
    adjustment saw since the last scheduled one (at most one such early adjustment per tenant and `ADJUST_S`).
    A flood that had the machine to itself keeps it full until its first cut, and a victim's first writes wait
    through that: up to 50 ms more, measured as the tail of the fairness bench."""

    def __init__(self, now: float) -> None:
        self.next = now + ADJUST_S
        self.seen: set[str] = set()  # who waited at the adjustments since the last scheduled one

    def due(self, waited: set[str], now: float) -> bool:
        """Whether to adjust now, with `waited` the tenants found waiting since the last adjustment."""
        scheduled = now >= self.next
        if not scheduled and waited <= self.seen:
            return False
        if scheduled:
            self.seen = set(waited)
            self.next = now + ADJUST_S
        else:
            self.seen |= waited
        return True


def parse_limits(body: object, current: Limits) -> Limits:
    """A `PUT .../limits` body: any of the three fields, each a positive integer; the others kept."""
    if not isinstance(body, dict):
        raise InvalidRequest("must be an object", "body")
    unknown = sorted(set(body) - LIMIT_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", "body")
    values = current.as_json()
    for name, high in (("writes_per_s", RATE_MAX), ("reads_per_s", RATE_MAX), ("burst_s", BURST_S_MAX)):
        if name in body:
            value = body[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
                raise InvalidRequest(f"must be an integer from 1 to {high}", name)
            values[name] = value
    return Limits(**values)
