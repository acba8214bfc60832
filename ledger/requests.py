"""The requests producers append to the log: money movements (transfers, holds and what closes them,
reversals), the creation of tenants, and the clock's ticks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple, assert_never

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


@dataclass(frozen=True, slots=True, kw_only=True)
class _Keyed:
    """What every request a tenant's ids and idempotency keys cover carries, already validated. Each kind
    is its own type below (`kind` names it on the wire and in storage); code tells them apart with
    `isinstance`, and mypy proves every kind handled where it matches `TransactionRequest` exhaustively."""

    id: str
    tenant: str
    idempotency_key: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    reference: str | None = None
    _fingerprint: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> bytes:
        """A digest of the body an `Idempotency-Key` binds: everything but the id. Its bytes are fixed by what
        keys were bound to on logs already written (`tests/unit/test_recorded_log.py` pins them)."""
        if self._fingerprint is None:
            # Frozen, so cache through object.__setattr__: it is asked for several times per decision.
            object.__setattr__(self, "_fingerprint", _digest(self._bound()))
        assert self._fingerprint is not None
        return self._fingerprint

    @property
    def kind(self) -> str:
        """What the wire and the transactions table call this kind of request."""
        raise NotImplementedError

    def _bound(self) -> dict[str, object]:
        raise NotImplementedError

    def _body(self, postings: tuple[Posting, ...] = (), target: str | None = None, amount: int | None = None,
              expires_in_s: int | None = None) -> dict[str, object]:
        """The digested body as it was when one wide type held every kind: a transfer's has only its
        postings, metadata and reference; every other kind's names the kind and all the wide type's fields."""
        body: dict[str, object] = {"postings": [p.as_json() for p in postings], "metadata": self.metadata,
                                   "reference": self.reference}
        if self.kind != TRANSFER:
            body |= {"kind": self.kind, "target": target, "amount": amount, "expires_in_s": expires_in_s}
        return body

    def wire(self) -> dict[str, object]:
        """The fields of this kind's record between the identity and the key (`ledger.codec` adds both), in
        the order records have always had."""
        raise NotImplementedError


def _digest(body: dict[str, object]) -> bytes:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Posted(_Keyed):
    """A request that moves or reserves money by `postings`, with conditions (contract v3): the exact version
    each named account must have, sorted by address; bounds on balances after it; and the postings (by index)
    whose `amount` is a maximum (`amount_max`: it moves at most what the source has available)."""

    postings: tuple[Posting, ...]
    if_version: tuple[tuple[str, int], ...] = ()
    asserts: tuple[Assertion, ...] = ()
    amount_max: frozenset[int] = frozenset()

    @property
    def conditional(self) -> bool:
        return bool(self.if_version or self.asserts or self.amount_max)

    def _conditioned(self, body: dict[str, object]) -> dict[str, object]:
        # Only when given, so the digest of a request without conditions is what it was before they existed.
        if self.if_version:
            body["if_version"] = [list(v) for v in self.if_version]
        if self.asserts:
            body["assert"] = [a.as_json() for a in self.asserts]
        if self.amount_max:
            body["amount_max"] = sorted(self.amount_max)
        return body

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


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequest(_Posted):
    """Moves money by its postings, all or nothing."""

    @property
    def kind(self) -> str:
        return TRANSFER

    def _bound(self) -> dict[str, object]:
        return self._conditioned(self._body(self.postings))

    def wire(self) -> dict[str, object]:
        return {"postings": self.postings_json(), **self.conditions_json()}


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldRequest(_Posted):
    """Reserves its postings' money on their sources until captured, voided or `expires_in_s` has passed."""

    expires_in_s: int = HOLD_EXPIRES_IN_S_DEFAULT

    @property
    def kind(self) -> str:
        return HOLD

    def _bound(self) -> dict[str, object]:
        return self._conditioned(self._body(self.postings, expires_in_s=self.expires_in_s))

    def wire(self) -> dict[str, object]:
        return {"postings": self.postings_json(), **self.conditions_json(), "expires_in_s": self.expires_in_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureRequest(_Keyed):
    """Moves what the hold `hold` reserved (`amount` of it, for a one-posting hold) and releases the rest."""

    hold: str
    amount: int | None = None

    @property
    def kind(self) -> str:
        return CAPTURE

    def _bound(self) -> dict[str, object]:
        return self._body(target=self.hold, amount=self.amount)

    def wire(self) -> dict[str, object]:
        return {"hold": self.hold} if self.amount is None else {"hold": self.hold, "amount": self.amount}


@dataclass(frozen=True, slots=True, kw_only=True)
class VoidRequest(_Keyed):
    """Releases what the hold `hold` reserved."""

    hold: str

    @property
    def kind(self) -> str:
        return VOID

    def _bound(self) -> dict[str, object]:
        return self._body(target=self.hold)

    def wire(self) -> dict[str, object]:
        return {"hold": self.hold}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReverseRequest(_Keyed):
    """Moves back what the transaction `transaction` moved (`amount` of it, for a one-posting one)."""

    transaction: str
    amount: int | None = None

    @property
    def kind(self) -> str:
        return REVERSE

    def _bound(self) -> dict[str, object]:
        return self._body(target=self.transaction, amount=self.amount)

    def wire(self) -> dict[str, object]:
        if self.amount is None:
            return {"transaction": self.transaction}
        return {"transaction": self.transaction, "amount": self.amount}


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRequest(_Keyed):
    """Replaces the policy of the customer account `account` (its `metadata` is the account's): per-asset
    overdraft limits, sorted by asset, and whether the account is frozen."""

    account: str
    limits: tuple[tuple[str, int], ...] = ()
    frozen: bool = False

    @property
    def kind(self) -> str:
        return POLICY

    def _bound(self) -> dict[str, object]:
        return self._body(target=self.account) | {"limits": list(self.limits), "frozen": self.frozen}

    def wire(self) -> dict[str, object]:
        return {"account": self.account, "overdraft_limit": dict(self.limits), "frozen": self.frozen}


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorRequest(_Keyed):
    """Creates the balance monitor `watch`; the monitor's id is the request's."""

    watch: Watch

    @property
    def kind(self) -> str:
        return MONITOR

    def _bound(self) -> dict[str, object]:
        return self._body() | {"watch": self.watch.as_json()}

    def wire(self) -> dict[str, object]:
        return {k: v for k, v in self.watch.as_json().items() if v is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class UnmonitorRequest(_Keyed):
    """Removes the balance monitor `monitor`."""

    monitor: str

    @property
    def kind(self) -> str:
        return UNMONITOR

    def _bound(self) -> dict[str, object]:
        return self._body(target=self.monitor)

    def wire(self) -> dict[str, object]:
        return {"monitor": self.monitor}


# Every request that becomes a transaction: one type per kind.
TransactionRequest = (TransferRequest | HoldRequest | CaptureRequest | VoidRequest | ReverseRequest | PolicyRequest
                      | MonitorRequest | UnmonitorRequest)
def target_of(request: TransactionRequest) -> str | None:
    """What a request acts on, as the transactions table's `target` stores it: the hold captured or voided,
    the transaction reversed, the account whose policy is set, the monitor removed."""
    match request:
        case CaptureRequest() | VoidRequest():
            return request.hold
        case ReverseRequest():
            return request.transaction
        case PolicyRequest():
            return request.account
        case UnmonitorRequest():
            return request.monitor
        case TransferRequest() | HoldRequest() | MonitorRequest():
            return None
        case _:
            assert_never(request)


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
    items: tuple[TransferRequest, ...]
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
