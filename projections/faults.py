"""The drivers' errors (asyncpg's, Kafka's) classified and translated into the projector's own: `Transient`
(retried) and `Poisoned` (the batch is bisected); anything else is a bug or a broken invariant, and stops the
worker. Nowhere else in the projector is a driver's error looked at."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from infra.producer import ProduceFailed

T = TypeVar("T")

# Faults that retrying the same work on a fresh connection can fix: the network, the server going away or
# refusing for now, lack of resources, conflicts between transactions. InternalClientError is what asyncpg
# raises when the server goes away in the middle of a COPY.
TRANSIENT = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
             asyncpg.AdminShutdownError, asyncpg.InternalClientError, asyncpg.SerializationError,
             asyncpg.DeadlockDetectedError, asyncpg.InsufficientResourcesError, asyncpg.OperatorInterventionError,
             asyncpg.InternalServerError, asyncpg.PostgresSystemError)
# SQLSTATE classes a record's own values cause: data exceptions (22: NUL, out of range, bad encoding),
# integrity violations (23: an id already taken) and program limits (54: an index row too large).
POISON_SQLSTATE_CLASSES = ("22", "23", "54")
# Except these: the database's own statement of what the fold guarantees. Violating one is a bug in the
# ledger, not in a record: the worker stops rather than decide the record invalid.
INVARIANT_CONSTRAINTS = frozenset({"entries_amount_not_zero", "transactions_committed_at_iff_committed",
                                   "balances_customer_not_negative", "balances_held_not_negative",
                                   "balances_customer_available", "balances_limit_not_negative",
                                   "balances_customer_within_limit", "transactions_kind"})


class Transient(Exception):
    """A fault of the surroundings (PostgreSQL or Kafka unreachable, restarting, in conflict): the same work on
    a fresh connection may succeed."""


class Poisoned(Exception):
    """PostgreSQL refused what some record of the batch holds (a value out of a column's range, an id taken, an
    index row too large): the batch is bisected to find the record. `detail` is the database's error."""

    def __init__(self, error: BaseException) -> None:
        self.detail = f"{type(error).__name__}: {error}"
        super().__init__(self.detail)


async def translated(call: Awaitable[T]) -> T:
    """`call`, with the drivers' errors translated into the projector's own: `Transient`, `Poisoned`, or as
    they were (a bug, a broken invariant: the worker stops)."""
    try:
        return await call
    except Exception as e:
        if transient(e):
            raise Transient(repr(e)) from e
        if poison(e):
            raise Poisoned(e) from e
        raise


def transient(error: BaseException) -> bool:
    """Whether `error` is a fault of the surroundings, worth retrying; asyncpg's client-side `DataError` is
    an `InterfaceError` but says a value cannot be sent, which no retry changes."""
    if isinstance(error, asyncpg.exceptions._base.DataError):
        return False
    if isinstance(error, ProduceFailed):  # Kafka did not acknowledge the outcomes: retried, unless for good
        return error.retriable and not error.fatal
    return notify_queue_full(error) or isinstance(error, (*TRANSIENT, asyncpg.InterfaceError))


def notify_queue_full(error: BaseException) -> bool:
    """PostgreSQL's queue of notifications is full (a listener stopped reading, and the queue keeps everything
    since it last did): a program limit (54000) by its SQLSTATE, but no record's doing. Retried: bisecting the
    batch would decide a valid request invalid once the queue drained."""
    return isinstance(error, asyncpg.ProgramLimitExceededError) and "NOTIFY queue" in str(error)


def poison(error: BaseException) -> bool:
    """Whether `error` may come from the values of some record of the batch (then the batch is bisected)."""
    if notify_queue_full(error):
        return False
    if isinstance(error, asyncpg.PostgresError):
        if getattr(error, "constraint_name", None) in INVARIANT_CONSTRAINTS:
            return False
        return str(error.sqlstate or "")[:2] in POISON_SQLSTATE_CLASSES
    # Encoding a value on our side: out of a column type's range, text that is not UTF-8.
    return isinstance(error, ValueError | OverflowError) and not transient(error)
