"""One call of the API (`Call`): what to send, and how to read the answer."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx

from wallet_ledger.errors import LedgerError
from wallet_ledger.models import Account, Page, Pending, Transaction, Webhook

T = TypeVar("T")

Json = dict[str, Any]
Metadata = Mapping[str, str]
Time = datetime | str


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One logical call: sent once, or again (identically) on a retry-worthy failure."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: tuple[tuple[str, str], ...] = ()
    body: Json | None = None
    idempotency_key: str | None = None  # a write appended to the log: the same key on every attempt
    reads: bool = False  # a read that takes `min_position` (read your writes)
    min_position: str | None = None
    server_wait_s: float | None = None  # how long the server may wait before it answers (a decision, a position)
    accept: str = "application/json"
    # Whether a request that may have reached the server can be sent again: reads, and writes with a key.
    # Other calls (webhooks' creation and deletion) are retried only when they surely did not leave.
    resendable: bool = True
    position: Callable[[T], str | None] | None = None  # the write's position, remembered for later reads

    def with_cursor(self, cursor: str) -> Call[T]:
        return replace(self, params=(*(p for p in self.params if p[0] != "cursor"), ("cursor", cursor)))


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="@:")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _time(value: Time, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime (RFC 3339 needs its offset)")
        return value.isoformat()
    raise TypeError(f"{name} must be a datetime or an RFC 3339 string, not {type(value).__name__}")


def _params(**values: Any) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        out.append((name, _bool(value) if isinstance(value, bool) else str(value)))
    return tuple(out)


def _fields(**values: Any) -> Json:
    """A body of the fields given (None: absent); mappings copied, amounts checked to be ints."""
    body: Json = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in ("amount", "below", "above") and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{name} must be an int in the asset's minor units, not {type(value).__name__}")
        body[name] = dict(value) if isinstance(value, Mapping) else value
    return body


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise LedgerError(f"the API answered {response.status_code} with a body that is not JSON",
                          status=response.status_code, code="invalid_response",
                          request_id=response.headers.get("x-request-id")) from None


def _replayed(response: httpx.Response) -> bool:
    return str(response.headers.get("idempotent-replayed", "")).lower() == "true"


def _is_pending(response: httpx.Response, body: object) -> bool:
    return response.status_code == 202 or (isinstance(body, dict) and body.get("status") == "pending")


def _decided(parse: Callable[[object, bool], T]) -> Callable[[httpx.Response], T | Pending]:
    """A write's answer: `Pending` (202, not decided yet) or the decided object (201, or 200 replayed)."""
    def read(response: httpx.Response) -> T | Pending:
        body = _json(response)
        return Pending.parse(body) if _is_pending(response, body) else parse(body, _replayed(response))
    return read


def _plain(parse: Callable[[object], T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(_json(response))


def _page(key: str, parse: Callable[[object], T]) -> Callable[[httpx.Response], Page[T]]:
    def read(response: httpx.Response) -> Page[T]:
        body = _json(response)
        data = body if isinstance(body, dict) else {}
        items = data.get(key)
        cursor = data.get("next_cursor")
        return Page(tuple(parse(i) for i in items if isinstance(i, dict)) if isinstance(items, list) else (),
                    cursor if isinstance(cursor, str) and cursor else None, data)
    return read


def _webhooks(response: httpx.Response) -> list[Webhook]:
    body = _json(response)
    items = body.get("webhooks") if isinstance(body, dict) else None
    return [Webhook.parse(w) for w in items if isinstance(w, dict)] if isinstance(items, list) else []


def _batch(response: httpx.Response) -> list[Transaction | Pending]:
    body = _json(response)
    items = body.get("transactions") if isinstance(body, dict) else None
    replayed = _replayed(response)
    return [Pending.parse(i) if i.get("status") == "pending" else Transaction.parse(i, replayed)
            for i in (items if isinstance(items, list) else []) if isinstance(i, dict)]


def _position(result: object) -> str | None:
    position = getattr(result, "position", None)
    return position if isinstance(position, str) and position else None


def _last_position(results: list[Transaction | Pending]) -> str | None:
    # A batch's items are appended in order: the last one's position covers them all.
    return next((p for p in (_position(r) for r in reversed(results)) if p is not None), None)


def _policy_position(result: Account | Pending) -> str | None:
    # A policy's 202 carries its own position; the account shown once it is decided carries the position of
    # its last balance change instead, which says nothing about the policy.
    return result.position if isinstance(result, Pending) else None


def _text(response: httpx.Response) -> str:
    return response.text
