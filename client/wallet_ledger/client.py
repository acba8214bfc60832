"""`LedgerClient` (sync) and `AsyncLedgerClient` (async): one tenant's view of the ledger's HTTP API.

Both share one core, and only their executors differ:

- `_Api` (routes.py) describes every call of the contract (method, path, query, body, how to read the answer)
  as a `Call` (calls.py), built once per logical call: a write's `Idempotency-Key` is chosen there, so every
  retry of the call sends the same key and the same bytes;
- `_Run` (retries.py) is the retry policy without I/O: it builds each attempt's request, and turns an answer or
  a lost connection into a result, an exception, or a delay before the next attempt (bounded by the call's
  deadline);
- `LedgerClient` and `AsyncLedgerClient` send the attempts (`httpx.Client` / `httpx.AsyncClient`) and sleep
  (`time.sleep` / `asyncio.sleep`); their public methods are generated from `_Api`'s, so each route is written
  once, with one signature and one docstring.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from wallet_ledger.calls import Call
from wallet_ledger.errors import LedgerError
from wallet_ledger.models import Page
from wallet_ledger.retries import RetryPolicy, _Done, _Run, _Settings
from wallet_ledger.routes import _Api

__version__ = "0.1.0"

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_TIMEOUT_S = 10.0  # one attempt; longer than the server's default wait (5 s) for a decision
DEFAULT_DEADLINE_S = 30.0  # a logical call, every retry included
USER_AGENT = f"wallet-ledger-python/{__version__}"


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


# `Call` (calls.py) and `RetryPolicy` (retries.py) stay importable from here: part of the published SDK's surface.
__all__ = ["DEFAULT_DEADLINE_S", "DEFAULT_TIMEOUT_S", "AsyncLedgerClient", "Call", "LedgerClient", "RetryPolicy"]
