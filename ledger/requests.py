"""The requests producers append to the log: money movements (transfers, holds and what closes them,
reversals), the creation of tenants, and the clock's ticks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

WIRE_VERSION = 1
TRANSFER = "transfer"
HOLD = "hold"
CAPTURE = "capture"
VOID = "void"
REVERSE = "reverse"
POLICY = "policy"
BATCH = "batch"
TENANT = "tenant"
TICK = "tick"
MONITOR = "monitor"
UNMONITOR = "unmonitor"
HOLD_EXPIRES_IN_S_DEFAULT = 604_800


class Posting(NamedTuple):
    """Moves `amount` minor units of `asset` from `source` to `destination`.

    A NamedTuple rather than a frozen dataclass, like `Entry`: the projector makes two or more per request,
    and a frozen dataclass's `__init__` costs an `object.__setattr__` per field (measured 1.3 µs vs 0.6 µs).
    """

    source: str
    destination: str
    amount: int
    asset: str

    def as_json(self) -> dict[str, object]:
        return {"source": self.source, "destination": self.destination, "amount": self.amount, "asset": self.asset}


class Assertion(NamedTuple):
    """A condition on a write (contract v3): after it, `account`'s posted balance in `asset` lies within
    [`min`, `max`] (inclusive; either bound may be absent)."""

    account: str
    asset: str
    min: int | None
    max: int | None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"account": self.account, "asset": self.asset}
        if self.min is not None:
            body["min"] = self.min
        if self.max is not None:
            body["max"] = self.max
        return body


class Watch(NamedTuple):
    """A balance monitor (contract v3): fires when a committed transaction moves `account`'s posted balance in
    `asset` from `>= below` to `< below`, or from `<= above` to `> above` (at least one bound is given)."""

    account: str
    asset: str
    below: int | None
    above: int | None

    def as_json(self) -> dict[str, object]:
        return {"account": self.account, "asset": self.asset, "below": self.below, "above": self.above}


@dataclass(frozen=True, slots=True)
class TransactionRequest:
    """One request on `ledger.transactions` that a tenant's ids and idempotency keys cover, already
    validated. `kind` says which: a transfer or a hold (`postings`, and for a hold `expires_in_s`), a capture
    or void of the hold `target`, a reversal of the transaction `target` (`amount` makes a capture or
    reversal partial), the policy of the account `target`, a balance monitor (`watch`; its id is the
    request's) or the removal of the monitor `target`."""

    id: str
    tenant: str
    postings: tuple[Posting, ...]
    idempotency_key: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    kind: str = TRANSFER
    target: str | None = None
    amount: int | None = None
    expires_in_s: int | None = None
    # An account policy (`kind` policy, `target` the account, `metadata` the account's): per-asset overdraft
    # limits, sorted by asset, and whether the account is frozen.
    limits: tuple[tuple[str, int], ...] = ()
    frozen: bool = False
    # Conditions (contract v3, transfers and holds): the exact version each named account must have, sorted by
    # address; bounds on balances after it; and the postings (by index) whose `amount` is a maximum
    # (`amount_max`: it moves at most what the source has available).
    if_version: tuple[tuple[str, int], ...] = ()
    asserts: tuple[Assertion, ...] = ()
    amount_max: frozenset[int] = frozenset()
    watch: Watch | None = None
    _fingerprint: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> bytes:
        """A digest of the body an `Idempotency-Key` binds: everything but the id."""
        if self._fingerprint is None:
            # Frozen, so cache through object.__setattr__: it is asked for several times per decision.
            object.__setattr__(self, "_fingerprint", self._digest())
        assert self._fingerprint is not None
        return self._fingerprint

    def _digest(self) -> bytes:
        body: dict[str, object] = {
            "postings": [p.as_json() for p in self.postings],
            "metadata": self.metadata,
            "reference": self.reference,
        }
        if self.kind != TRANSFER:  # a transfer's digest is what it was before the other kinds existed
            body |= {"kind": self.kind, "target": self.target, "amount": self.amount,
                     "expires_in_s": self.expires_in_s}
        if self.kind == POLICY:
            body |= {"limits": list(self.limits), "frozen": self.frozen}
        if self.watch is not None:
            body["watch"] = self.watch.as_json()
        # Only when given, so the digest of a request without conditions is what it was before they existed.
        if self.if_version:
            body["if_version"] = [list(v) for v in self.if_version]
        if self.asserts:
            body["assert"] = [a.as_json() for a in self.asserts]
        if self.amount_max:
            body["amount_max"] = sorted(self.amount_max)
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()

    @property
    def conditional(self) -> bool:
        return bool(self.if_version or self.asserts or self.amount_max)

    def postings_json(self) -> list[dict[str, object]]:
        """The postings as the request gives them: `amount_max` for those that move at most that much."""
        out = [p.as_json() for p in self.postings]
        for index in self.amount_max:
            out[index]["amount_max"] = out[index].pop("amount")
        return out

    def conditions_json(self) -> dict[str, object]:
        """The request's conditions as its body gives them (none: empty)."""
        body: dict[str, object] = {}
        if self.if_version:
            body["if_version"] = dict(self.if_version)
        if self.asserts:
            body["assert"] = [a.as_json() for a in self.asserts]
        return body


@dataclass(frozen=True, slots=True)
class TenantRequest:
    """Creates a tenant (`POST /v1/tenants`): on the log, so whether a tenant exists at a point of the log
    is decided by the log alone and a replay decides every later request alike."""

    id: str
    tenant: str
    name: str


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock: a record that carries only its own (broker-given) time, so holds expire by the log's time
    on a partition where nothing else is appended."""


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """Transfers in one record. Atomic (the default, and all a record without `"atomic"` can be): all
    committed, or all rejected with the reason of the first that failed; otherwise each decided on its own,
    in order. Each item keeps its own id and idempotency key; the batch's own `idempotency_key` binds the
    whole batch, so a repeat of it replays every item (contract v3)."""

    id: str
    tenant: str
    items: tuple[TransactionRequest, ...]
    idempotency_key: str | None = None
    atomic: bool = True
    _fingerprint: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> bytes:
        """A digest of what the batch's key binds: every item's body and key, in order, and `atomic` (not
        the ids, which each attempt makes anew). Computed once (it reads every item)."""
        if self._fingerprint is None:
            body = {"atomic": self.atomic,
                    "items": [[i.fingerprint().hex(), i.idempotency_key] for i in self.items]}
            digest = hashlib.sha256(b"batch\n" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
            object.__setattr__(self, "_fingerprint", digest)
        assert self._fingerprint is not None
        return self._fingerprint


Request = TransactionRequest | TenantRequest | Tick | BatchRequest
