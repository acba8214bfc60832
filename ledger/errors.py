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


class AppendUnconfirmed(Unavailable):
    """Kafka did not acknowledge an append (by the API or a producer client) in time. The request may still be
    on the log (the producer retries), so its `id` is given: it resolves (`GET .../transactions/{id}`, or a
    producer's `outcome()`) if and only if it is there, and a retry with the same Idempotency-Key is safe."""

    code = "append_unconfirmed"

    def __init__(self, tenant: str, id: str, cause: str | None = None) -> None:
        # The API's answer says what its client can do; a producer's exception names the append and its cause.
        super().__init__("the log (Kafka) did not acknowledge the request in time; it may still be appended: "
                         "retry with the same Idempotency-Key, or look up the transaction id" if cause is None else
                         f"append of {id!r} for {tenant!r} not acknowledged ({cause}); it may still be on the log")
        self.tenant = tenant
        self.id = id
