"""Which events an outcome of `ledger.outcomes` makes (contract v3's "events out"), pure.

An event is about one decided request (a transaction, a hold) or one crossing of a balance monitor. Its id is
derived from its place in the log, keyed with the position key (raw positions are not shown to tenants), so
every reading of the same outcome, a replay's included, makes the same id, and the dispatcher stores it once.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NamedTuple

COMMITTED = "transaction.committed"
REJECTED = "transaction.rejected"
HOLD_CREATED = "hold.created"
HOLD_CAPTURED = "hold.captured"
HOLD_VOIDED = "hold.voided"
HOLD_EXPIRED = "hold.expired"
CROSSED = "balance.crossed"
EVENT_TYPES = (COMMITTED, REJECTED, HOLD_CREATED, HOLD_CAPTURED, HOLD_VOIDED, HOLD_EXPIRED, CROSSED)
ANY = "*"

# A committed request's event by its kind; a policy, a monitor and a tenant's creation make none.
COMMITTED_EVENT = {"transfer": COMMITTED, "reverse": COMMITTED, "hold": HOLD_CREATED, "capture": HOLD_CAPTURED,
                   "void": HOLD_VOIDED}
# What a rejection is an event of: a request about money (or a record unreadable as any kind).
MONEY_KINDS = frozenset({"transfer", "hold", "capture", "void", "reverse", None})
# The hold an event's data shows (else the transaction): a hold's own, or the one a capture or void closed.
HOLD_EVENTS = frozenset({HOLD_CREATED, HOLD_CAPTURED, HOLD_VOIDED, HOLD_EXPIRED})


class Event(NamedTuple):
    id: str
    tenant: str
    type: str
    subject: str  # the id of the transaction or hold it is about (a capture's or void's own id: its hold is read)
    position: str  # the tenant's token for the request's place in the log
    crossing: dict[str, Any] | None  # a balance.crossed event's data


def event_id(key: bytes, record: str, type: str, subject: str, monitor: str = "") -> str:
    mac = hmac.new(key, f"{record}\n{type}\n{subject}\n{monitor}".encode(), hashlib.sha256)
    return "evt_" + mac.hexdigest()[:32]


def events_of(outcome: dict[str, Any], key: bytes) -> list[Event]:
    """The events an outcome makes: none for a repeat of a request decided before (its original made them),
    for a record on the wrong partition (nothing of it is kept) or for a request without tenant and id."""
    tenant, subject, status = outcome.get("tenant"), outcome.get("id"), outcome.get("status")
    if not isinstance(tenant, str) or not isinstance(subject, str) or "original_id" in outcome:
        return []
    record, position, kind = str(outcome.get("record")), str(outcome.get("position")), outcome.get("kind")
    type: str | None
    if status == "expired":
        type = HOLD_EXPIRED
    elif status == "committed":
        type = COMMITTED_EVENT.get(kind) if isinstance(kind, str) else None
    elif status == "rejected" and kind in MONEY_KINDS and outcome.get("reason") != "wrong_partition":
        type = REJECTED
    else:
        type = None
    events = [] if type is None else [Event(event_id(key, record, type, subject), tenant, type, subject, position,
                                            None)]
    for crossing in outcome.get("crossings") or ():
        if isinstance(crossing, dict):
            monitor = str(crossing.get("monitor"))
            events.append(Event(event_id(key, record, CROSSED, subject, monitor), tenant, CROSSED, subject, position,
                                crossing))
    return events


def wanted(subscribed: frozenset[str], type: str) -> bool:
    return ANY in subscribed or type in subscribed
