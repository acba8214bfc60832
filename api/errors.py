"""Ledger errors as HTTP: the status each kind maps to, and the contract's error body."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.responses import Response

from api.auth import Forbidden, Unauthorized
from api.inputs import PayloadTooLarge
from api.limits import RateLimited
from api.progress import TooManyWaiting
from api.responses import error
from ledger.errors import (
    AlreadyExists,
    InvalidRequest,
    LedgerError,
    MalformedJson,
    NotFound,
    TransactionRejected,
    Unavailable,
)

log = logging.getLogger("ledger.api")

STATUS_BY_ERROR: list[tuple[type[LedgerError], int]] = [
    (MalformedJson, 400),
    (InvalidRequest, 422),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (TransactionRejected, 409),
    (PayloadTooLarge, 413),
    (TooManyWaiting, 429),
    (RateLimited, 429),
    (Unavailable, 503),
]


def error_response(exc: LedgerError) -> Response:
    """The contract's error for `exc`, with the status its kind maps to."""
    status = next((s for cls, s in STATUS_BY_ERROR if isinstance(exc, cls)), 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = exc.headers()
    elif status in (429, 503):
        headers = {"Retry-After": "1"}
    return error(status, exc.code, exc.message, headers=headers)


def http_error_response(exc: HTTPException) -> Response:
    """Starlette's own refusals (404, 405) in the ledger's JSON error shape."""
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                 headers=dict(exc.headers) if exc.headers else None)


def internal_error(exc: BaseException, request_id: str | None, method: str, path: str) -> Response:
    """Log `exc` with its traceback and answer 500 without its details. The exception is passed, not taken from
    the handling context: Starlette runs a sync handler in a worker thread, where there is none."""
    log.error("unexpected error", exc_info=exc, extra={"request_id": request_id, "method": method, "path": path})
    return error(500, "internal", "an unexpected error occurred; it has been logged")
