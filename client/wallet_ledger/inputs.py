"""What goes in: postings, conditions and batch items, and the JSON bodies made of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


def _check_amount(name: str, value: object) -> None:
    # bool is an int to Python, and a float is never an amount: the contract has no floats, ever.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int in the asset's minor units, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Posting:
    """Move `amount` (an int, in the asset's minor units) of `asset` from `source` to `destination`."""

    source: str
    destination: str
    amount: int
    asset: str

    def __post_init__(self) -> None:
        _check_amount("amount", self.amount)

    @staticmethod
    def at_most(source: str, destination: str, amount_max: int, asset: str) -> PostingAtMost:
        """A posting that moves `min(amount_max, what source has available)` (contract v3)."""
        return PostingAtMost(source, destination, amount_max, asset)

    def to_json(self) -> Json:
        return {"source": self.source, "destination": self.destination, "amount": self.amount, "asset": self.asset}


@dataclass(frozen=True, slots=True)
class PostingAtMost:
    """Move at most `amount_max`: `min(amount_max, available)` of a customer account (0 if nothing is
    available); the committed transaction's posting shows the amount moved."""

    source: str
    destination: str
    amount_max: int
    asset: str

    def __post_init__(self) -> None:
        _check_amount("amount_max", self.amount_max)

    def to_json(self) -> Json:
        return {"source": self.source, "destination": self.destination, "amount_max": self.amount_max,
                "asset": self.asset}


AnyPosting = Posting | PostingAtMost
PostingLike = Posting | PostingAtMost | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Assertion:
    """A condition on a write: after it, `account`'s posted balance in `asset` lies within [min, max]
    (each bound optional, inclusive); otherwise the write is rejected with `assertion_failed`."""

    account: str
    asset: str
    min: int | None = None
    max: int | None = None

    def to_json(self) -> Json:
        body: Json = {"account": self.account, "asset": self.asset}
        if self.min is not None:
            body["min"] = self.min
        if self.max is not None:
            body["max"] = self.max
        return body


AssertionLike = Assertion | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One transfer of a batch; `idempotency_key` is the item's own (the batch's key binds the whole)."""

    postings: Sequence[PostingLike]
    metadata: Mapping[str, str] | None = None
    reference: str | None = None
    idempotency_key: str | None = None
    if_version: Mapping[str, int] | None = None
    assert_: Sequence[AssertionLike] | None = None

    def to_json(self) -> Json:
        return transfer_body(self.postings, metadata=self.metadata, reference=self.reference,
                             if_version=self.if_version, assert_=self.assert_,
                             idempotency_key=self.idempotency_key)


def posting_json(posting: PostingLike) -> Json:
    if isinstance(posting, Posting | PostingAtMost):
        return posting.to_json()
    if isinstance(posting, Mapping):
        return dict(posting)
    raise TypeError(f"a posting must be a Posting, a PostingAtMost or a mapping, not {type(posting).__name__}")


def assertion_json(assertion: AssertionLike) -> Json:
    if isinstance(assertion, Assertion):
        return assertion.to_json()
    if isinstance(assertion, Mapping):
        return dict(assertion)
    raise TypeError(f"an assertion must be an Assertion or a mapping, not {type(assertion).__name__}")


def transfer_body(postings: Sequence[PostingLike] | PostingLike, *, metadata: Mapping[str, str] | None = None,
                  reference: str | None = None, if_version: Mapping[str, int] | None = None,
                  assert_: Sequence[AssertionLike] | None = None, idempotency_key: str | None = None,
                  **extra: Any) -> Json:
    """The JSON body of a transfer (or a hold, with `expires_in_s` in `extra`): only the fields given."""
    if isinstance(postings, Posting | PostingAtMost | Mapping):
        postings = [postings]
    body: Json = {"postings": [posting_json(p) for p in postings]}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if reference is not None:
        body["reference"] = reference
    if if_version is not None:
        body["if_version"] = dict(if_version)
    if assert_ is not None:
        body["assert"] = [assertion_json(a) for a in assert_]
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def batch_item_json(item: BatchItem | Mapping[str, Any]) -> Json:
    if isinstance(item, BatchItem):
        return item.to_json()
    if isinstance(item, Mapping):
        body = dict(item)
        if "postings" in body:
            body["postings"] = [posting_json(p) for p in body["postings"]]
        if "assert_" in body:
            body["assert"] = body.pop("assert_")
        if "assert" in body and body["assert"] is not None:
            body["assert"] = [assertion_json(a) for a in body["assert"]]
        return body
    raise TypeError(f"a batch item must be a BatchItem or a mapping, not {type(item).__name__}")
