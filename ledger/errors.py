"""The ledger's operating errors. Only `api/` turns them into HTTP responses."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger reports to a caller, with a stable machine-readable code."""

    code = "ledger_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(LedgerError):
    """A request or event that breaks the contract's rules for its shape or values."""

    code = "invalid_request"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class MalformedJson(InvalidRequest):
    """Bytes that are not a JSON document at all."""

    code = "malformed_json"


class NotFound(LedgerError):
    """The tenant, transaction or key asked for does not exist."""

    code = "not_found"


class AlreadyExists(LedgerError):
    """Creating something whose id is taken."""

    code = "already_exists"


class TransactionRejected(LedgerError):
    """The projector decided the transaction and rejected it; `code` is its reason."""

    code = "rejected"


class Unavailable(LedgerError):
    """A dependency (Kafka, PostgreSQL) or the projection is not ready in time; retrying may succeed."""

    code = "unavailable"
