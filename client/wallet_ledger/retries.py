"""The retry policy without I/O (`_Run`): each attempt's request, and the result, error or delay it ends in."""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from wallet_ledger.calls import Call
from wallet_ledger.errors import DeadlineExceeded, LedgerError, RateLimited, error_class

T = TypeVar("T")

WAIT_MARGIN_S = 2.0  # an attempt the server may hold that long waits this much longer for the answer


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
