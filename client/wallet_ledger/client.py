"""`LedgerClient` (sync) and `AsyncLedgerClient` (async): one tenant's view of the ledger's HTTP API.

Both share one core, and only their executors differ:

- `_Api` describes every call of the contract (method, path, query, body, how to read the answer) as a
  `Call`, built once per logical call: a write's `Idempotency-Key` is chosen there, so every retry of the call
  sends the same key and the same bytes;
- `_Run` is the retry policy without I/O: it builds each attempt's request, and turns an answer or a lost
  connection into a result, an exception, or a delay before the next attempt (bounded by the call's deadline);
- `LedgerClient` and `AsyncLedgerClient` send the attempts (`httpx.Client` / `httpx.AsyncClient`) and sleep
  (`time.sleep` / `asyncio.sleep`); their public methods are generated from `_Api`'s, so each route is written
  once, with one signature and one docstring.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import random
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import httpx

from wallet_ledger.errors import DeadlineExceeded, LedgerError, RateLimited, error_class
from wallet_ledger.inputs import AssertionLike, BatchItem, PostingLike, batch_item_json, transfer_body
from wallet_ledger.models import (
    Account,
    BalanceSums,
    Chain,
    Delivery,
    Entry,
    Hold,
    Monitor,
    Page,
    Pending,
    Snapshot,
    Statement,
    Transaction,
    Webhook,
)

__version__ = "0.1.0"

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_TIMEOUT_S = 10.0  # one attempt; longer than the server's default wait (5 s) for a decision
DEFAULT_DEADLINE_S = 30.0  # a logical call, every retry included
SERVER_WAIT_MS = 5000  # the server's default `timeout_ms` for a decision (`wait=true`) or a `min_position`
WAIT_MARGIN_S = 2.0  # an attempt the server may hold that long waits this much longer for the answer
USER_AGENT = f"wallet-ledger-python/{__version__}"

Json = dict[str, Any]
Metadata = Mapping[str, str]
Time = datetime | str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait between attempts: exponential backoff with jitter (each delay drawn from the upper
    half of `min(cap_s, base_s * 2**n)`), or the server's `Retry-After` when it gives one. `statuses` are
    the answers retried (every call is bounded by its client's `deadline_s`)."""

    base_s: float = 0.1
    cap_s: float = 5.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def backoff(self, retry: int, rng: random.Random) -> float:
        step = min(self.cap_s, self.base_s * 2 ** min(retry, 32))
        return float(step / 2 + rng.uniform(0, step / 2))


# --- one call: what to send, and how to read the answer --------------------------------------------------------


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


# --- every route of the contract, described once ----------------------------------------------------------------


class _Api:
    """Builds the `Call` of every method of the clients (their docstrings are these)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.root = f"/v1/tenants/{_quote(tenant)}"

    @staticmethod
    def _key(idempotency_key: str | None) -> str:
        return idempotency_key if idempotency_key is not None else str(uuid.uuid4())

    def _write(self, method: str, path: str, body: Json | None, parse: Callable[[httpx.Response], T], *,
               idempotency_key: str | None, wait: bool, timeout_ms: int | None,
               position: Callable[[T], str | None] = _position) -> Call[T]:
        return Call(method, self.root + path, parse, _params(wait=True if wait else None, timeout_ms=timeout_ms),
                    body=body, idempotency_key=self._key(idempotency_key),
                    server_wait_s=(timeout_ms or SERVER_WAIT_MS) / 1000 if wait else None, position=position)

    def _read(self, path: str, parse: Callable[[httpx.Response], T], *, min_position: str | None,
              timeout_ms: int | None, query: tuple[tuple[str, str], ...] = (),
              accept: str = "application/json") -> Call[T]:
        return Call("GET", self.root + path, parse, query + _params(timeout_ms=timeout_ms), reads=True,
                    min_position=min_position, server_wait_s=(timeout_ms or SERVER_WAIT_MS) / 1000, accept=accept)

    # --- transactions ---

    def transfer(self, postings: Sequence[PostingLike] | PostingLike, *, metadata: Metadata | None = None,
                 reference: str | None = None, idempotency_key: str | None = None, wait: bool = True,
                 timeout_ms: int | None = None, if_version: Mapping[str, int] | None = None,
                 assert_: Sequence[AssertionLike] | None = None) -> Call[Transaction | Pending]:
        """Move money: `postings` (1 to 128 `Posting`s, or `Posting.at_most(...)`) applied all or none.

        With `wait` (the default) the answer is the committed `Transaction` (a `Conflict` whose `code` is the
        reason if the ledger rejects it: `insufficient_funds`, `version_conflict`, `assertion_failed`, ...), or
        `Pending` if it was not decided within `timeout_ms` (server default 5000). `if_version` ({address:
        version}) and `assert_` (`Assertion`s) are conditions decided with it. The `idempotency_key` (a new
        UUID unless given) makes retries safe: a repeat answers with the original decision."""
        body = transfer_body(postings, metadata=metadata, reference=reference, if_version=if_version,
                             assert_=assert_)
        return self._write("POST", "/transactions", body, _decided(Transaction.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)

    def batch(self, transactions: Sequence[BatchItem | Mapping[str, Any]], *, atomic: bool = True,
              idempotency_key: str | None = None, wait: bool = True,
              timeout_ms: int | None = None) -> Call[list[Transaction | Pending]]:
        """Append up to 1,000 transfers (`BatchItem`s, or mappings with `postings`, `metadata`, `reference`,
        `idempotency_key`, `if_version`, `assert`) in order. `atomic` (the default here): one record, all
        committed or all rejected (each then carries the reason of the first that failed); otherwise each is
        decided on its own. The answer lists every item's `Transaction` (rejected ones included, with their
        `reason`) or `Pending`. The batch's `idempotency_key` binds the whole batch."""
        body: Json = {"transactions": [batch_item_json(t) for t in transactions], "atomic": atomic}
        return self._write("POST", "/transactions/batch", body, _batch, idempotency_key=idempotency_key,
                           wait=wait, timeout_ms=timeout_ms, position=_last_position)

    def get_transaction(self, id: str, *, min_position: str | None = None,
                        timeout_ms: int | None = None) -> Call[Transaction]:
        """A transaction and its outcome (a repeat of an idempotency key shows `replay_of`)."""
        return self._read(f"/transactions/{_quote(id)}", _plain(Transaction.parse), min_position=min_position,
                          timeout_ms=timeout_ms)

    def list_transactions(self, *, account: str | None = None, reference: str | None = None,
                          status: str | None = None, since: Time | None = None, until: Time | None = None,
                          metadata: Metadata | None = None, limit: int | None = None, cursor: str | None = None,
                          min_position: str | None = None, timeout_ms: int | None = None) -> Call[Page[Transaction]]:
        """One page of transactions, newest first, by filters: `account` (moved money on it), `reference`,
        `status` (committed, rejected), `since`/`until` (creation time, inclusive), `metadata` (every
        KEY=VALUE). `limit` ≤ 500 (default 50); pass the page's `next_cursor` as `cursor` for the next one."""
        return self._read("/transactions", _page("transactions", Transaction.parse), min_position=min_position,
                          timeout_ms=timeout_ms, query=_params(
                              account=account, reference=reference, status=status,
                              since=None if since is None else _time(since, "since"),
                              until=None if until is None else _time(until, "until"), limit=limit, cursor=cursor,
                          ) + tuple((f"metadata.{k}", v) for k, v in (metadata or {}).items()))

    def reverse(self, transaction_id: str, amount: int | None = None, *, metadata: Metadata | None = None,
                reference: str | None = None, idempotency_key: str | None = None, wait: bool = True,
                timeout_ms: int | None = None) -> Call[Transaction | Pending]:
        """Reverse a transaction: a new one with every posting's source and destination swapped (all of it,
        or `amount` of a one-posting transaction). `Conflict` codes: `not_reversible`,
        `amount_exceeds_remaining`, `insufficient_funds`."""
        body = _fields(amount=amount, metadata=metadata, reference=reference)
        return self._write("POST", f"/transactions/{_quote(transaction_id)}/reverse", body,
                           _decided(Transaction.parse), idempotency_key=idempotency_key, wait=wait,
                           timeout_ms=timeout_ms)

    # --- holds ---

    def hold(self, postings: Sequence[PostingLike] | PostingLike, *, expires_in_s: int | None = None,
             metadata: Metadata | None = None, reference: str | None = None, idempotency_key: str | None = None,
             wait: bool = True, timeout_ms: int | None = None, if_version: Mapping[str, int] | None = None,
             assert_: Sequence[AssertionLike] | None = None) -> Call[Hold | Pending]:
        """Place a hold: reserve the postings' amounts on their sources (their `available` balance) until it
        is captured, voided, or expires (`expires_in_s`, server default 7 days)."""
        body = transfer_body(postings, metadata=metadata, reference=reference, if_version=if_version,
                             assert_=assert_, expires_in_s=expires_in_s)
        return self._write("POST", "/holds", body, _decided(Hold.parse), idempotency_key=idempotency_key,
                           wait=wait, timeout_ms=timeout_ms)

    def capture(self, hold_id: str, amount: int | None = None, *, metadata: Metadata | None = None,
                reference: str | None = None, idempotency_key: str | None = None, wait: bool = True,
                timeout_ms: int | None = None) -> Call[Transaction | Pending]:
        """Capture a hold: move the money as a new committed transaction (all of it, or `amount` of a
        one-posting hold, the rest released). `Conflict` codes: `hold_closed`, `hold_expired`."""
        body = _fields(amount=amount, metadata=metadata, reference=reference)
        return self._write("POST", f"/holds/{_quote(hold_id)}/capture", body, _decided(Transaction.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)

    def void(self, hold_id: str, *, metadata: Metadata | None = None, reference: str | None = None,
             idempotency_key: str | None = None, wait: bool = True,
             timeout_ms: int | None = None) -> Call[Hold | Pending]:
        """Void a hold: release what it reserved (`Conflict` `hold_closed` if it is closed already)."""
        body = _fields(metadata=metadata, reference=reference)
        return self._write("POST", f"/holds/{_quote(hold_id)}/void", body, _decided(Hold.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)

    def get_hold(self, id: str, *, min_position: str | None = None, timeout_ms: int | None = None) -> Call[Hold]:
        """A hold and its state: held, captured, voided, expired or rejected."""
        return self._read(f"/holds/{_quote(id)}", _plain(Hold.parse), min_position=min_position,
                          timeout_ms=timeout_ms)

    # --- accounts ---

    def get_account(self, address: str, at: Time | None = None, *, min_position: str | None = None,
                    timeout_ms: int | None = None) -> Call[Account]:
        """An account's balances, held and available amounts, version and policy; `at` gives the posted
        balances as of that time."""
        return self._read(f"/accounts/{_quote(address)}", _plain(Account.parse), min_position=min_position,
                          timeout_ms=timeout_ms, query=_params(at=None if at is None else _time(at, "at")))

    def snapshot(self, addresses: Sequence[str], *, min_position: str | None = None,
                 timeout_ms: int | None = None) -> Call[Snapshot]:
        """1 to 100 accounts, in the order asked, all read as of one position of the log."""
        if isinstance(addresses, str):
            addresses = [addresses]
        return self._read("/accounts", _plain(Snapshot.parse), min_position=min_position, timeout_ms=timeout_ms,
                          query=tuple(("address", a) for a in addresses))

    def list_accounts(self, prefix: str | None = None, *, limit: int | None = None, cursor: str | None = None,
                      min_position: str | None = None, timeout_ms: int | None = None) -> Call[Page[Account]]:
        """One page of accounts whose address starts with `prefix`, by address."""
        return self._read("/accounts", _page("accounts", Account.parse), min_position=min_position,
                          timeout_ms=timeout_ms, query=_params(prefix=prefix, limit=limit, cursor=cursor))

    def balances(self, prefix: str | None = None, *, min_position: str | None = None,
                 timeout_ms: int | None = None) -> Call[BalanceSums]:
        """Per asset, the sum of the balances of the accounts whose address starts with `prefix` (all of the
        tenant's, `@world` included, sum to zero)."""
        return self._read("/balances", _plain(BalanceSums.parse), min_position=min_position, timeout_ms=timeout_ms,
                          query=_params(prefix=prefix))

    def entries(self, address: str, asset: str | None = None, *, limit: int | None = None,
                cursor: str | None = None, min_position: str | None = None,
                timeout_ms: int | None = None) -> Call[Page[Entry]]:
        """One page of an account's history, newest first (`amount` signed: negative = debit)."""
        return self._read(f"/accounts/{_quote(address)}/entries", _page("entries", Entry.parse),
                          min_position=min_position, timeout_ms=timeout_ms,
                          query=_params(asset=asset, limit=limit, cursor=cursor))

    def export_csv(self, address: str, asset: str | None = None, *, min_position: str | None = None,
                   timeout_ms: int | None = None) -> Call[str]:
        """Every entry of the account (of `asset`, if given) as CSV text, newest first, with the header row
        `transaction_id,asset,amount,balance_after,committed_at`."""
        return self._read(f"/accounts/{_quote(address)}/entries", _text, min_position=min_position,
                          timeout_ms=timeout_ms, accept="text/csv", query=_params(asset=asset))

    def statement(self, address: str, asset: str, from_: Time | None = None, until: Time | None = None, *,
                  min_position: str | None = None, timeout_ms: int | None = None) -> Call[Statement]:
        """The statement of a period (`until` exclusive; by default the account's first entry to now):
        opening + credits - debits = closing."""
        return self._read(f"/accounts/{_quote(address)}/statement", _plain(Statement.parse),
                          min_position=min_position, timeout_ms=timeout_ms, query=_params(**{
                              "asset": asset, "from": None if from_ is None else _time(from_, "from_"),
                              "until": None if until is None else _time(until, "until")}))

    def set_policy(self, address: str, *, overdraft_limit: Mapping[str, int] | None = None,
                   frozen: bool | None = None, metadata: Metadata | None = None, idempotency_key: str | None = None,
                   wait: bool = True, timeout_ms: int | None = None) -> Call[Account | Pending]:
        """Replace the account's whole policy: `overdraft_limit` ({asset: limit}; an asset not named gets 0),
        `frozen` (takes part in no new transfer, hold or capture) and `metadata`."""
        body = _fields(overdraft_limit=overdraft_limit, frozen=frozen, metadata=metadata)
        return self._write("PUT", f"/accounts/{_quote(address)}", body, _decided(Account.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms,
                           position=_policy_position)

    def chain(self, *, min_position: str | None = None, timeout_ms: int | None = None) -> Call[Chain]:
        """The tenant's tamper-evident chain: `count` committed movements, `head` the last one's hash."""
        return self._read("/chain", _plain(Chain.parse), min_position=min_position, timeout_ms=timeout_ms)

    # --- webhooks ---

    def create_webhook(self, url: str, events: Sequence[str] = ("*",)) -> Call[Webhook]:
        """Register an endpoint for `events` (`transaction.committed`, `transaction.rejected`, `hold.created`,
        `hold.captured`, `hold.voided`, `hold.expired`, `balance.crossed`, or "*"). The answer's `secret`
        verifies the deliveries' signatures (`wallet_ledger.verify_signature`) and is shown only here.
        `InvalidRequest` `url_not_allowed` for a URL whose host is or resolves to a non-public address."""
        if isinstance(events, str):
            events = [events]
        return Call("POST", self.root + "/webhooks", _plain(Webhook.parse), body={"url": url, "events": list(events)},
                    resendable=False)

    def list_webhooks(self) -> Call[list[Webhook]]:
        """The tenant's endpoints (without their secrets)."""
        return Call("GET", self.root + "/webhooks", _webhooks)

    def get_webhook(self, id: str) -> Call[Webhook]:
        """An endpoint."""
        return Call("GET", f"{self.root}/webhooks/{_quote(id)}", _plain(Webhook.parse))

    def delete_webhook(self, id: str) -> Call[Webhook]:
        """Delete an endpoint (what it still had to receive is cancelled); the answer shows `deleted_at`."""
        return Call("DELETE", f"{self.root}/webhooks/{_quote(id)}", _plain(Webhook.parse), resendable=False)

    def deliveries(self, webhook_id: str, *, limit: int | None = None,
                   cursor: str | None = None) -> Call[Page[Delivery]]:
        """One page of an endpoint's delivery attempts, newest first (`limit` ≤ 1000, default 100)."""
        return Call("GET", f"{self.root}/webhooks/{_quote(webhook_id)}/deliveries", _page("deliveries", Delivery.parse),
                    _params(limit=limit, cursor=cursor))

    # --- monitors ---

    def create_monitor(self, account: str, asset: str, below: int | None = None, above: int | None = None, *,
                       metadata: Metadata | None = None, reference: str | None = None,
                       idempotency_key: str | None = None, wait: bool = True,
                       timeout_ms: int | None = None) -> Call[Monitor | Pending]:
        """Watch an account's posted balance in `asset`: `balance.crossed` fires when a committed transaction
        takes it from >= `below` to < `below`, or from <= `above` to > `above` (at least one bound)."""
        body = {"account": account, "asset": asset,
                **_fields(below=below, above=above, metadata=metadata, reference=reference)}
        return self._write("POST", "/monitors", body, _decided(Monitor.parse), idempotency_key=idempotency_key,
                           wait=wait, timeout_ms=timeout_ms)

    def get_monitor(self, id: str, *, min_position: str | None = None,
                    timeout_ms: int | None = None) -> Call[Monitor]:
        """A monitor (active or removed)."""
        return self._read(f"/monitors/{_quote(id)}", _plain(Monitor.parse), min_position=min_position,
                          timeout_ms=timeout_ms)

    def list_monitors(self, *, removed: bool = False, limit: int | None = None, cursor: str | None = None,
                      min_position: str | None = None, timeout_ms: int | None = None) -> Call[Page[Monitor]]:
        """One page of the tenant's monitors by id: the active ones (`removed=True`: all)."""
        return self._read("/monitors", _page("monitors", Monitor.parse), min_position=min_position,
                          timeout_ms=timeout_ms,
                          query=_params(limit=limit, cursor=cursor, removed=True if removed else None))

    def delete_monitor(self, id: str, *, idempotency_key: str | None = None, wait: bool = True,
                       timeout_ms: int | None = None) -> Call[Monitor | Pending]:
        """Remove a monitor (`NotFound` if it is not active)."""
        return self._write("DELETE", f"/monitors/{_quote(id)}", None, _decided(Monitor.parse),
                           idempotency_key=idempotency_key, wait=wait, timeout_ms=timeout_ms)


# --- the retry policy, without I/O ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Done(Generic[T]):
    value: T


# A lost connection after which a request may have been applied; only resendable calls try again then.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
# Failures before anything was sent: any call may try again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _retry_after(value: str | None) -> float | None:
    """`Retry-After`: seconds, or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(slots=True)
class _Settings:
    base_url: str
    api_key: str
    tenant: str
    timeout_s: float
    deadline_s: float
    read_your_writes: bool
    retry: RetryPolicy
    user_agent: str
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    last_position: str | None = None  # of the last write answered: `min_position` of reads that want it


class _Run(Generic[T]):
    """One logical call's attempts: the same request each time, bounded by the deadline."""

    def __init__(self, settings: _Settings, call: Call[T]) -> None:
        self.settings = settings
        self.call = call
        self.deadline = settings.clock() + settings.deadline_s
        self.attempts = 0
        params = list(call.params)
        min_position = call.min_position
        if min_position is None and settings.read_your_writes:
            min_position = settings.last_position
        # A read waits on the server only for a position; a write, with `wait`, for its decision.
        self.server_wait_s = call.server_wait_s if not call.reads or min_position is not None else None
        if call.reads and min_position is not None:
            params.append(("min_position", min_position))
        self.params = params
        self.url = settings.base_url + call.path
        self.headers = {"Authorization": f"Bearer {settings.api_key}", "Accept": call.accept,
                        "User-Agent": settings.user_agent}
        self.content: bytes | None = None
        if call.body is not None:
            self.content = json.dumps(call.body, separators=(",", ":"), ensure_ascii=False).encode()
            self.headers["Content-Type"] = "application/json"
        if call.idempotency_key is not None:
            self.headers["Idempotency-Key"] = call.idempotency_key

    def request(self) -> httpx.Request:
        """The next attempt, with a timeout that ends no later than the deadline."""
        remaining = self.deadline - self.settings.clock()
        per_attempt = self.settings.timeout_s
        if self.server_wait_s is not None:  # the server may hold the request that long before it answers
            per_attempt = max(per_attempt, self.server_wait_s + WAIT_MARGIN_S)
        timeout = max(0.001, min(per_attempt, remaining))
        self.attempts += 1
        return httpx.Request(self.call.method, self.url, params=tuple(self.params), headers=self.headers,
                             content=self.content, extensions={"timeout": httpx.Timeout(timeout).as_dict()})

    def answered(self, response: httpx.Response) -> _Done[T] | float:
        """The call's result, or how long to wait before the next attempt; raises the answer's error."""
        if 200 <= response.status_code < 300:
            value = self.call.parse(response)
            if self.call.position is not None:
                position = self.call.position(value)
                if position is not None:
                    self.settings.last_position = position
            return _Done(value)
        error = _error(response)
        if response.status_code not in self.settings.retry.statuses:
            raise error
        return self._again(error, _retry_after(response.headers.get("retry-after")))

    def failed(self, exc: httpx.TransportError) -> float:
        """How long to wait after a lost connection; raises if the call must not, or cannot, try again."""
        if isinstance(exc, _NOT_SENT) or (self.call.resendable and isinstance(exc, _MAYBE_SENT)):
            return self._again(exc, None)
        if isinstance(exc, _MAYBE_SENT):
            raise LedgerError(f"{self.call.method} {self.call.path} failed ({type(exc).__name__}: {exc}): it may "
                              "or may not have been applied", code="transport_error") from exc
        raise LedgerError(f"{self.call.method} {self.call.path} could not be sent ({type(exc).__name__}: {exc})",
                          code="transport_error") from exc

    def _again(self, error: BaseException, retry_after: float | None) -> float:
        if retry_after is not None:
            delay = retry_after * (1 + 0.1 * self.settings.rng.random())  # at least what the server asked
        else:
            delay = self.settings.retry.backoff(self.attempts - 1, self.settings.rng)
        if self.settings.clock() + delay >= self.deadline:
            status = error.status if isinstance(error, LedgerError) else None
            raise DeadlineExceeded(
                f"{self.call.method} {self.call.path} did not succeed within its deadline of "
                f"{self.settings.deadline_s:g} s ({self.attempts} attempts; last: {error})",
                status=status, last_error=error, idempotency_key=self.call.idempotency_key,
                body=error.body if isinstance(error, LedgerError) else None) from error
        return delay


def _error(response: httpx.Response) -> LedgerError:
    """The exception of an error answer: its class by status, its code and message from the contract's body."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    detail = body.get("error")
    detail = detail if isinstance(detail, dict) else {}
    code = detail["code"] if isinstance(detail.get("code"), str) else f"http_{status}"
    message = detail["message"] if isinstance(detail.get("message"), str) else \
        (response.reason_phrase or f"HTTP {status}")
    kwargs: dict[str, Any] = {"status": status, "code": code, "body": body, "headers": dict(response.headers),
                              "request_id": response.headers.get("x-request-id")}
    cls = error_class(status)
    if cls is RateLimited:
        return RateLimited(message, retry_after=_retry_after(response.headers.get("retry-after")), **kwargs)
    return cls(message, **kwargs)


# --- the two clients ----------------------------------------------------------------------------------------------


def _sync(build: Callable[Concatenate[_Api, P], Call[T]]) -> Callable[Concatenate[LedgerClient, P], T]:
    def method(self: LedgerClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._execute(build(self._api, *args, **kwargs))
    _named(method, build)
    return method


def _sync_pages(build: Callable[Concatenate[_Api, P], Call[Page[T]]]) -> Callable[Concatenate[LedgerClient, P],
                                                                                   Iterator[T]]:
    def method(self: LedgerClient, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        call: Call[Page[T]] | None = build(self._api, *args, **kwargs)
        while call is not None:
            page = self._execute(call)
            yield from page.items
            call = _next(call, page)
    _named(method, build, "iter_" + build.__name__.removeprefix("list_"), iterates="Iterator")
    return method


def _async(build: Callable[Concatenate[_Api, P], Call[T]]) -> Callable[Concatenate[AsyncLedgerClient, P],
                                                                        Coroutine[Any, Any, T]]:
    async def method(self: AsyncLedgerClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._execute(build(self._api, *args, **kwargs))
    _named(method, build)
    return method


def _async_pages(build: Callable[Concatenate[_Api, P], Call[Page[T]]]) -> Callable[
        Concatenate[AsyncLedgerClient, P], AsyncIterator[T]]:
    async def method(self: AsyncLedgerClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        call: Call[Page[T]] | None = build(self._api, *args, **kwargs)
        while call is not None:
            page = await self._execute(call)
            for item in page.items:
                yield item
            call = _next(call, page)
    _named(method, build, "iter_" + build.__name__.removeprefix("list_"), iterates="AsyncIterator")
    return method


def _next(call: Call[Page[T]], page: Page[T]) -> Call[Page[T]] | None:
    if page.next_cursor is None:
        return None
    if dict(call.params).get("cursor") == page.next_cursor:
        raise LedgerError("the API answered the same cursor twice", code="invalid_response")
    return call.with_cursor(page.next_cursor)


def _named(method: Any, build: Callable[..., Any], name: str | None = None, iterates: str | None = None) -> None:
    """Give a generated method its builder's name, docstring and signature (what `help()` shows), with the
    result it gives instead of the `Call` the builder returns."""
    method.__name__ = method.__qualname__ = name or build.__name__
    doc = build.__doc__ or ""
    signature = inspect.signature(build)
    shown = signature.return_annotation
    if isinstance(shown, str) and shown.startswith("Call[") and shown.endswith("]"):
        shown = shown[len("Call["):-1]
        if iterates is not None and shown.startswith("Page[") and shown.endswith("]"):
            shown = f"{iterates}[{shown[len('Page['):-1]}]"
    if iterates is not None:
        doc = ("Every item of every page, fetching the next page (by `next_cursor`) as it goes; the "
               "arguments are those of `" + build.__name__ + "`:\n\n" + doc)
    method.__doc__ = doc
    method.__signature__ = signature.replace(return_annotation=shown)


class _Base:
    """What the two clients share: their settings, and the routes (`_api`)."""

    def __init__(self, base_url: str, api_key: str, tenant: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 deadline_s: float = DEFAULT_DEADLINE_S, read_your_writes: bool = False,
                 retry: RetryPolicy | None = None, user_agent: str | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        if not api_key:
            raise ValueError("api_key is required")
        if not tenant:
            raise ValueError("tenant is required")
        self._settings = _Settings(base_url.rstrip("/"), api_key, tenant, timeout_s, deadline_s, read_your_writes,
                                   retry or RetryPolicy(), user_agent or USER_AGENT)
        self._api = _Api(tenant)

    @property
    def tenant(self) -> str:
        return self._settings.tenant

    @property
    def last_position(self) -> str | None:
        """The position of the last write this client was answered: reads wait for it with
        `read_your_writes=True`, or pass it as `min_position=` yourself."""
        return self._settings.last_position

    @last_position.setter
    def last_position(self, value: str | None) -> None:
        self._settings.last_position = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._settings.base_url!r}, tenant={self.tenant!r})"


class LedgerClient(_Base):
    """A tenant's synchronous client of the ledger's HTTP API.

        with LedgerClient("http://127.0.0.1:8000", api_key="...", tenant="acme") as ledger:
            tx = ledger.transfer([Posting("@world", "alice", 1000, "USD/2")])

    Every write carries an `Idempotency-Key` (a new UUID unless given), the same on each of its retries.
    Retried, with exponential backoff and jitter, until `deadline_s` (default 30) has passed: 429 (after its
    `Retry-After`), 502/503/504, and lost connections (a write too: its key makes that safe). Any other error
    answer raises at once, as the `LedgerError` subclass of its status. `timeout_s` bounds one attempt.
    With `read_your_writes=True` every read waits for the position of this client's last write. `transport`
    replaces httpx's (tests use `httpx.MockTransport`)."""

    def __init__(self, base_url: str, api_key: str, tenant: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 deadline_s: float = DEFAULT_DEADLINE_S, read_your_writes: bool = False,
                 transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
                 user_agent: str | None = None) -> None:
        super().__init__(base_url, api_key, tenant, timeout_s=timeout_s, deadline_s=deadline_s,
                         read_your_writes=read_your_writes, retry=retry, user_agent=user_agent)
        self._http = httpx.Client(transport=transport, follow_redirects=False)
        self._sleep: Callable[[float], None] = time.sleep

    def _execute(self, call: Call[T]) -> T:
        run = _Run(self._settings, call)
        while True:
            request = run.request()
            try:
                response = self._http.send(request)
            except httpx.TransportError as e:
                step: _Done[T] | float = run.failed(e)
            else:
                step = run.answered(response)
            if isinstance(step, _Done):
                return step.value
            self._sleep(step)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    transfer = _sync(_Api.transfer)
    batch = _sync(_Api.batch)
    get_transaction = _sync(_Api.get_transaction)
    list_transactions = _sync(_Api.list_transactions)
    iter_transactions = _sync_pages(_Api.list_transactions)
    reverse = _sync(_Api.reverse)
    hold = _sync(_Api.hold)
    capture = _sync(_Api.capture)
    void = _sync(_Api.void)
    get_hold = _sync(_Api.get_hold)
    get_account = _sync(_Api.get_account)
    snapshot = _sync(_Api.snapshot)
    list_accounts = _sync(_Api.list_accounts)
    iter_accounts = _sync_pages(_Api.list_accounts)
    balances = _sync(_Api.balances)
    entries = _sync(_Api.entries)
    iter_entries = _sync_pages(_Api.entries)
    export_csv = _sync(_Api.export_csv)
    statement = _sync(_Api.statement)
    set_policy = _sync(_Api.set_policy)
    chain = _sync(_Api.chain)
    create_webhook = _sync(_Api.create_webhook)
    list_webhooks = _sync(_Api.list_webhooks)
    get_webhook = _sync(_Api.get_webhook)
    delete_webhook = _sync(_Api.delete_webhook)
    deliveries = _sync(_Api.deliveries)
    iter_deliveries = _sync_pages(_Api.deliveries)
    create_monitor = _sync(_Api.create_monitor)
    get_monitor = _sync(_Api.get_monitor)
    list_monitors = _sync(_Api.list_monitors)
    iter_monitors = _sync_pages(_Api.list_monitors)
    delete_monitor = _sync(_Api.delete_monitor)


class AsyncLedgerClient(_Base):
    """`LedgerClient` for asyncio: the same methods, as coroutines (and `iter_*` as async iterators).

        async with AsyncLedgerClient("http://127.0.0.1:8000", api_key="...", tenant="acme") as ledger:
            tx = await ledger.transfer([Posting("@world", "alice", 1000, "USD/2")])
            async for entry in ledger.iter_entries("alice"):
                ...
    """

    def __init__(self, base_url: str, api_key: str, tenant: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 deadline_s: float = DEFAULT_DEADLINE_S, read_your_writes: bool = False,
                 transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
                 user_agent: str | None = None) -> None:
        super().__init__(base_url, api_key, tenant, timeout_s=timeout_s, deadline_s=deadline_s,
                         read_your_writes=read_your_writes, retry=retry, user_agent=user_agent)
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self._sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep

    async def _execute(self, call: Call[T]) -> T:
        run = _Run(self._settings, call)
        while True:
            request = run.request()
            try:
                response = await self._http.send(request)
            except httpx.TransportError as e:
                step: _Done[T] | float = run.failed(e)
            else:
                step = run.answered(response)
            if isinstance(step, _Done):
                return step.value
            await self._sleep(step)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    transfer = _async(_Api.transfer)
    batch = _async(_Api.batch)
    get_transaction = _async(_Api.get_transaction)
    list_transactions = _async(_Api.list_transactions)
    iter_transactions = _async_pages(_Api.list_transactions)
    reverse = _async(_Api.reverse)
    hold = _async(_Api.hold)
    capture = _async(_Api.capture)
    void = _async(_Api.void)
    get_hold = _async(_Api.get_hold)
    get_account = _async(_Api.get_account)
    snapshot = _async(_Api.snapshot)
    list_accounts = _async(_Api.list_accounts)
    iter_accounts = _async_pages(_Api.list_accounts)
    balances = _async(_Api.balances)
    entries = _async(_Api.entries)
    iter_entries = _async_pages(_Api.entries)
    export_csv = _async(_Api.export_csv)
    statement = _async(_Api.statement)
    set_policy = _async(_Api.set_policy)
    chain = _async(_Api.chain)
    create_webhook = _async(_Api.create_webhook)
    list_webhooks = _async(_Api.list_webhooks)
    get_webhook = _async(_Api.get_webhook)
    delete_webhook = _async(_Api.delete_webhook)
    deliveries = _async(_Api.deliveries)
    iter_deliveries = _async_pages(_Api.deliveries)
    create_monitor = _async(_Api.create_monitor)
    get_monitor = _async(_Api.get_monitor)
    list_monitors = _async(_Api.list_monitors)
    iter_monitors = _async_pages(_Api.list_monitors)
    delete_monitor = _async(_Api.delete_monitor)


__all__ = ["DEFAULT_DEADLINE_S", "DEFAULT_TIMEOUT_S", "AsyncLedgerClient", "Call", "LedgerClient", "RetryPolicy"]
