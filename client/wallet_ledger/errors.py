"""The exceptions the SDK raises: one class per kind of HTTP answer, each carrying the contract's error code.

Every error of the API has the body `{"error": {"code", "message"}, ...}`; `LedgerError.code` is that code
(for a rejection by the ledger, the reason: `insufficient_funds`, `hold_closed`, `version_conflict`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LedgerError(Exception):
    """An error answer of the ledger's API (or of the SDK on its behalf).

    `status` is the HTTP status (None when no answer came), `code` the contract's error code, `message` its
    human-readable text, `body` the whole JSON body of the answer (an empty dict when it was not JSON), and
    `request_id` the `X-Request-Id` the API gave the request (to quote to its operators)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error",
                 body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                 request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body: dict[str, Any] = dict(body or {})
        self.headers: dict[str, str] = dict(headers or {})
        self.request_id = request_id

    @property
    def transaction(self) -> dict[str, Any] | None:
        """The transaction the answer carries: a rejected one (409), or the original of a replayed key."""
        value = self.body.get("transaction")
        return value if isinstance(value, dict) else None

    @property
    def replayed(self) -> bool:
        """Whether this answer repeats the decision of an already used `Idempotency-Key`."""
        return self.headers.get("idempotent-replayed", "").lower() == "true"

    def __str__(self) -> str:
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class InvalidRequest(LedgerError):
    """400 (malformed JSON), 413 (body too large) or 422 (a bad field, parameter or header)."""


class Unauthorized(LedgerError):
    """401: no API key, or one the ledger does not know (or revoked)."""


class Forbidden(LedgerError):
    """403: the key used outside its tenant or its scopes."""


class NotFound(LedgerError):
    """404: an unknown tenant, transaction, hold, account route, webhook or monitor."""


class Conflict(LedgerError):
    """409: the ledger rejected the request; `code` is the reason (`insufficient_funds`, `hold_closed`,
    `idempotency_conflict`, `version_conflict`, ...) and `transaction` the rejected transaction, when shown."""

    @property
    def reason(self) -> str:
        return self.code


class RateLimited(LedgerError):
    """429: past the tenant's limits; `retry_after` is the server's `Retry-After`, in seconds (None if absent).
    A write refused so was not appended: its idempotency key stays free."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unavailable(LedgerError):
    """503 (or 502/504 from a proxy): a dependency or the projection was not ready in time."""


class DeadlineExceeded(LedgerError):
    """The call's overall budget (`deadline_s`) ran out before it succeeded. `last_error` is the last failure
    seen (an `Unavailable`, a `RateLimited`, or the `httpx.TransportError` of a lost connection), also chained
    as `__cause__`. A write may still have been applied: call it again with the same `idempotency_key` (shown
    as `idempotency_key`) to learn its outcome without applying it twice."""

    def __init__(self, message: str, *, last_error: BaseException | None = None,
                 idempotency_key: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("code", "deadline_exceeded")
        super().__init__(message, **kwargs)
        self.last_error = last_error
        self.idempotency_key = idempotency_key


class SignatureError(ValueError):
    """A webhook delivery whose `Ledger-Signature` does not verify (wrong secret, changed body, a time
    outside the tolerance, or a malformed header)."""


_BY_STATUS: dict[int, type[LedgerError]] = {
    400: InvalidRequest,
    413: InvalidRequest,
    422: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_class(status: int) -> type[LedgerError]:
    """The exception class of an error answer with this HTTP status."""
    return _BY_STATUS.get(status, LedgerError)


__all__ = [
    "Conflict",
    "DeadlineExceeded",
    "Forbidden",
    "InvalidRequest",
    "LedgerError",
    "NotFound",
    "RateLimited",
    "SignatureError",
    "Unauthorized",
    "Unavailable",
    "error_class",
]
