"""The typed results of the ledger's API.

Every result is a frozen dataclass parsed defensively from the JSON the API answers: a missing field takes
its neutral value (None, 0, an empty mapping) and never raises, and `.raw` keeps the whole object, fields this
SDK does not know yet included. Amounts are Python ints, in the asset's minor units; times are aware
`datetime`s (None when absent or unreadable).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

# Assertion, BatchItem, Posting and PostingAtMost (inputs.py) stay importable from here: the SDK's surface.
from wallet_ledger.inputs import AnyPosting, Assertion, BatchItem, Json, Posting, PostingAtMost
from wallet_ledger.readers import _int, _ints, _obj, _opt_int, _postings, _str, _strs, _time

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pending:
    """A request appended to the log and not yet decided (202): look it up later by `id`, and read with
    `min_position=position` to see its effect."""

    id: str
    position: str | None
    status: str = "pending"
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> Pending:
        data = _obj(body)
        return cls(id=str(data.get("id", "")), position=_str(data.get("position")),
                   status=str(data.get("status", "pending")), raw=data)


@dataclass(frozen=True, slots=True)
class Transaction:
    """A decided transaction (a transfer, or a capture, reversal or other request shown as one)."""

    id: str
    status: str
    postings: tuple[AnyPosting, ...]
    metadata: dict[str, str]
    reference: str | None
    position: str | None
    created_at: datetime | None
    committed_at: datetime | None
    reason: str | None = None
    idempotency_key: str | None = None
    replay_of: str | None = None
    kind: str = "transfer"
    captures: str | None = None
    voids: str | None = None
    reverses: str | None = None
    reversed: int | dict[str, int] | None = None
    hash: str | None = None
    previous_hash: str | None = None
    balances_after: dict[str, dict[str, int]] = field(default_factory=dict)
    replayed: bool = False
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    @classmethod
    def parse(cls, body: object, replayed: bool = False) -> Transaction:
        d = _obj(body)
        reversed_raw = d.get("reversed")
        reversed_value: int | dict[str, int] | None = (
            _ints(reversed_raw) if isinstance(reversed_raw, dict) else _opt_int(reversed_raw))
        return cls(
            id=str(d.get("id", "")), status=str(d.get("status", "")), postings=_postings(d.get("postings")),
            metadata=_strs(d.get("metadata")), reference=_str(d.get("reference")), position=_str(d.get("position")),
            created_at=_time(d.get("created_at")), committed_at=_time(d.get("committed_at")),
            reason=_str(d.get("reason")), idempotency_key=_str(d.get("idempotency_key")),
            replay_of=_str(d.get("replay_of")), kind=_str(d.get("kind")) or "transfer",
            captures=_str(d.get("captures")), voids=_str(d.get("voids")), reverses=_str(d.get("reverses")),
            reversed=reversed_value, hash=_str(d.get("hash")), previous_hash=_str(d.get("previous_hash")),
            balances_after={str(a): _ints(b) for a, b in _obj(d.get("balances_after")).items()},
            replayed=replayed, raw=d)


@dataclass(frozen=True, slots=True)
class Hold:
    """A two-phase hold: `status` is held, captured, voided, expired or rejected."""

    id: str
    status: str
    postings: tuple[AnyPosting, ...]
    metadata: dict[str, str]
    reference: str | None
    position: str | None
    created_at: datetime | None
    expires_at: datetime | None
    closed_at: datetime | None = None
    closed_by: str | None = None
    reason: str | None = None
    replayed: bool = False
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object, replayed: bool = False) -> Hold:
        d = _obj(body)
        return cls(id=str(d.get("id", "")), status=str(d.get("status", "")), postings=_postings(d.get("postings")),
                   metadata=_strs(d.get("metadata")), reference=_str(d.get("reference")),
                   position=_str(d.get("position")), created_at=_time(d.get("created_at")),
                   expires_at=_time(d.get("expires_at")), closed_at=_time(d.get("closed_at")),
                   closed_by=_str(d.get("closed_by")), reason=_str(d.get("reason")), replayed=replayed, raw=d)


@dataclass(frozen=True, slots=True)
class Account:
    """An account's posted `balances`, `held` (open holds debiting it), `available` (= balances - held), its
    `version` (for `if_version`) and policy (`metadata`, `overdraft_limit`, `frozen`); `at` for a read as of
    a past time."""

    address: str
    balances: dict[str, int]
    held: dict[str, int]
    available: dict[str, int]
    version: int
    position: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    overdraft_limit: dict[str, int] = field(default_factory=dict)
    frozen: bool = False
    at: datetime | None = None
    replayed: bool = False
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    def balance(self, asset: str) -> int:
        return self.balances.get(asset, 0)

    @classmethod
    def parse(cls, body: object, replayed: bool = False) -> Account:
        d = _obj(body)
        return cls(address=str(d.get("address", "")), balances=_ints(d.get("balances")), held=_ints(d.get("held")),
                   available=_ints(d.get("available")), version=_int(d.get("version")),
                   position=_str(d.get("position")), metadata=_strs(d.get("metadata")),
                   overdraft_limit=_ints(d.get("overdraft_limit")), frozen=d.get("frozen") is True,
                   at=_time(d.get("at")), replayed=replayed, raw=d)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Accounts read in one snapshot of the log (in the order asked), all as of `position`."""

    accounts: tuple[Account, ...]
    position: str | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[Account]:
        return iter(self.accounts)

    def __len__(self) -> int:
        return len(self.accounts)

    @classmethod
    def parse(cls, body: object) -> Snapshot:
        d = _obj(body)
        accounts = d.get("accounts")
        return cls(accounts=tuple(Account.parse(a) for a in accounts if isinstance(a, dict))
                   if isinstance(accounts, list) else (), position=_str(d.get("position")), raw=d)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of an account's history: `amount` signed (negative = debit)."""

    transaction_id: str
    asset: str
    amount: int
    balance_after: int
    committed_at: datetime | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> Entry:
        d = _obj(body)
        return cls(transaction_id=str(d.get("transaction_id", "")), asset=str(d.get("asset", "")),
                   amount=_int(d.get("amount")), balance_after=_int(d.get("balance_after")),
                   committed_at=_time(d.get("committed_at")), raw=d)


@dataclass(frozen=True, slots=True)
class Statement:
    """A period of one asset on one account (`until` exclusive): opening + credits - debits = closing."""

    address: str
    asset: str
    from_: datetime | None
    until: datetime | None
    opening: int
    closing: int
    debits: int
    credits: int
    count: int
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> Statement:
        d = _obj(body)
        return cls(address=str(d.get("address", "")), asset=str(d.get("asset", "")), from_=_time(d.get("from")),
                   until=_time(d.get("until")), opening=_int(d.get("opening")), closing=_int(d.get("closing")),
                   debits=_int(d.get("debits")), credits=_int(d.get("credits")), count=_int(d.get("count")), raw=d)


@dataclass(frozen=True, slots=True)
class BalanceSums:
    """Per asset, the sum of the balances of the accounts whose address starts with `prefix`."""

    prefix: str
    balances: dict[str, int]
    accounts: int
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> BalanceSums:
        d = _obj(body)
        return cls(prefix=str(d.get("prefix", "")), balances=_ints(d.get("balances")),
                   accounts=_int(d.get("accounts")), raw=d)


@dataclass(frozen=True, slots=True)
class Chain:
    """The tenant's tamper-evident chain: how many committed movements it links, and the last one's hash."""

    count: int
    head: str
    position: str | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> Chain:
        d = _obj(body)
        return cls(count=_int(d.get("count")), head=str(d.get("head", "")), position=_str(d.get("position")), raw=d)


@dataclass(frozen=True, slots=True)
class Monitor:
    """A balance monitor: `balance.crossed` fires when a committed transaction takes the posted balance
    from >= below to < below, or from <= above to > above. `status` is active or removed."""

    id: str
    account: str
    asset: str
    below: int | None
    above: int | None
    status: str
    position: str | None
    created_at: datetime | None
    removed_at: datetime | None = None
    replayed: bool = False
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object, replayed: bool = False) -> Monitor:
        d = _obj(body)
        return cls(id=str(d.get("id", "")), account=str(d.get("account", "")), asset=str(d.get("asset", "")),
                   below=_opt_int(d.get("below")), above=_opt_int(d.get("above")), status=str(d.get("status", "")),
                   position=_str(d.get("position")), created_at=_time(d.get("created_at")),
                   removed_at=_time(d.get("removed_at")), replayed=replayed, raw=d)


@dataclass(frozen=True, slots=True)
class Webhook:
    """An endpoint receiving events; `secret` (to verify signatures) is only in the answer that created it."""

    id: str
    url: str
    events: tuple[str, ...]
    created_at: datetime | None
    secret: str | None = field(default=None, repr=False)
    deleted_at: datetime | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> Webhook:
        d = _obj(body)
        events = d.get("events")
        return cls(id=str(d.get("id", "")), url=str(d.get("url", "")),
                   events=tuple(e for e in events if isinstance(e, str)) if isinstance(events, list) else (),
                   created_at=_time(d.get("created_at")), secret=_str(d.get("secret")),
                   deleted_at=_time(d.get("deleted_at")), raw=d)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt of an event to an endpoint (`status_code` None when no answer came)."""

    event_id: str
    type: str
    status_code: int | None
    error: str | None
    attempt: int
    at: datetime | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, body: object) -> Delivery:
        d = _obj(body)
        return cls(event_id=str(d.get("event_id", "")), type=str(d.get("type", "")),
                   status_code=_opt_int(d.get("status_code")), error=_str(d.get("error")),
                   attempt=_int(d.get("attempt")), at=_time(d.get("at")), raw=d)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_cursor` (None on the last page) asks for the next one."""

    items: tuple[T, ...]
    next_cursor: str | None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


__all__ = [
    "Account",
    "AnyPosting",
    "Assertion",
    "BalanceSums",
    "BatchItem",
    "Chain",
    "Delivery",
    "Entry",
    "Hold",
    "Monitor",
    "Page",
    "Pending",
    "Posting",
    "PostingAtMost",
    "Snapshot",
    "Statement",
    "Transaction",
    "Webhook",
]
