"""The OpenAPI document's component schemas: requests and answers, with the bounds the code enforces."""

from __future__ import annotations

from typing import Any

from dispatch.events import ANY, EVENT_TYPES
from ledger.validation import (
    ADDRESS_RE,
    ASSET_RE,
    BATCH_ITEMS_MAX,
    CONDITIONS_MAX,
    HOLD_EXPIRES_IN_S_MAX,
    ID_RE,
    LIMITS_MAX,
)

# An object answer: the fields it lists and no other (tests/e2e/test_openapi_live.py holds the API to it).
CLOSED: dict[str, Any] = {"type": "object", "additionalProperties": False}


def _posting(amount: str, minimum: int, description: str | None = None) -> dict[str, Any]:
    """A posting's schema: its amount field named `amount` (or `amount_max`), at least `minimum`."""
    schema: dict[str, Any] = {
        "type": "object", "additionalProperties": False,
        "required": ["source", "destination", amount, "asset"],
        "properties": {
            "source": {"type": "string", "pattern": f"^(?:{ADDRESS_RE.pattern})$"},
            "destination": {"type": "string", "pattern": f"^(?:{ADDRESS_RE.pattern})$"},
            amount: {"type": "integer", "minimum": minimum, "maximum": 9223372036854775807},
            "asset": {"type": "string", "pattern": f"^(?:{ASSET_RE.pattern})$"},
        },
    }
    return schema if description is None else {**schema, "description": description}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "Posting": _posting("amount", 1),
    "PostingMoved": _posting("amount", 0, "A posting as a transaction or hold shows it: what it moved or reserves. "
                             "0 only for an `amount_max` posting that found nothing available (contract v3)."),
    "PostingAtMost": _posting("amount_max", 1, "Moves min(amount_max, what the source has available), 0 if nothing "
                              "is; the committed transaction shows the amount moved. The source must be a customer "
                              "account."),
    "IfVersion": {
        "type": "object", "minProperties": 1, "maxProperties": CONDITIONS_MAX,
        "description": "Rejected (version_conflict) unless each named account's version is exactly this",
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807},
    },
    "Assertions": {
        "type": "array", "minItems": 1, "maxItems": CONDITIONS_MAX,
        "description": "Rejected (assertion_failed) unless each account's posted balance after the request lies "
                       "within [min, max]; at most 128 conditions with if_version",
        "items": {"type": "object", "additionalProperties": False, "required": ["account", "asset"],
                  "properties": {
                      "account": {"type": "string", "pattern": f"^(?:{ADDRESS_RE.pattern})$"},
                      "asset": {"type": "string", "pattern": f"^(?:{ASSET_RE.pattern})$"},
                      "min": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807},
                      "max": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807},
                  }},
    },
    "TransactionRequest": {
        "type": "object", "additionalProperties": False, "required": ["postings"],
        "properties": {
            "postings": {"type": "array", "minItems": 1, "maxItems": 128, "items": {"oneOf": [
                {"$ref": "#/components/schemas/Posting"}, {"$ref": "#/components/schemas/PostingAtMost"}]}},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
            "if_version": {"$ref": "#/components/schemas/IfVersion"},
            "assert": {"$ref": "#/components/schemas/Assertions"},
        },
    },
    "Transaction": {
        "type": "object", "additionalProperties": False,
        "required": ["id", "status", "postings", "metadata", "position", "created_at"],
        "properties": {
            "id": {"type": "string", "pattern": f"^(?:{ID_RE.pattern})$"},
            "status": {"enum": ["committed", "rejected"]},
            "reason": {"type": "string"},
            "postings": {"type": "array", "items": {"oneOf": [  # rejected: `amount_max` as given
                {"$ref": "#/components/schemas/PostingMoved"}, {"$ref": "#/components/schemas/PostingAtMost"}]}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"]},
            "idempotency_key": {"type": ["string", "null"]},
            "position": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "committed_at": {"type": ["string", "null"], "format": "date-time"},
            "replay_of": {"type": "string", "description": "This id repeated an idempotency key: the original's id"},
            "kind": {"enum": ["hold", "capture", "void", "reverse", "policy", "monitor", "unmonitor"]},
            "captures": {"type": "string"}, "voids": {"type": "string"}, "reverses": {"type": "string"},
            "monitor": {"type": "string", "description": "The monitor an unmonitor record removed"},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "A committed movement's link "
                     "in its tenant's chain: SHA-256(previous_hash + newline + canonical JSON)"},
            "previous_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "balances_after": {"type": "object", "description": "A committed movement: every touched account's "
                               "posted balance right after it", "additionalProperties": {
                                   "type": "object", "additionalProperties": {"type": "integer"}}},
            "reversed": {"oneOf": [{"type": "integer"},
                                   {"type": "object", "additionalProperties": {"type": "integer"}}],
                         "description": "The amount reversed so far: an integer in the transaction's asset, or per "
                                        "asset when it moved several"},
        },
    },
    "HoldRequest": {
        "type": "object", "additionalProperties": False, "required": ["postings"],
        "properties": {
            "postings": {"type": "array", "minItems": 1, "maxItems": 128, "items": {"oneOf": [
                {"$ref": "#/components/schemas/Posting"}, {"$ref": "#/components/schemas/PostingAtMost"}]}},
            "expires_in_s": {"type": "integer", "minimum": 1, "maximum": HOLD_EXPIRES_IN_S_MAX},
            "if_version": {"$ref": "#/components/schemas/IfVersion"},
            "assert": {"$ref": "#/components/schemas/Assertions"},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        },
    },
    "Hold": {
        "type": "object", "additionalProperties": False, "required": ["id", "status", "postings", "position"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["held", "captured", "voided", "expired", "rejected"]},
            "reason": {"type": "string"},
            "postings": {"type": "array", "items": {"oneOf": [  # rejected: `amount_max` as given
                {"$ref": "#/components/schemas/PostingMoved"}, {"$ref": "#/components/schemas/PostingAtMost"}]}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"]},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "closed_at": {"type": ["string", "null"], "format": "date-time"},
            "closed_by": {"type": "string"},
            "position": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Amount": {
        "type": ["object", "null"], "additionalProperties": False,
        "properties": {
            "amount": {"type": "integer", "minimum": 1, "maximum": 9223372036854775807},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        },
    },
    "PolicyRequest": {
        "type": ["object", "null"], "additionalProperties": False,
        "properties": {
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "overdraft_limit": {"type": ["object", "null"], "maxProperties": LIMITS_MAX,
                                "additionalProperties": {"type": "integer", "minimum": 0,
                                                         "maximum": 9223372036854775807}},
            "frozen": {"type": ["boolean", "null"]},
        },
    },
    "BatchRequest": {
        "type": "object", "additionalProperties": False, "required": ["transactions"],
        "properties": {
            "transactions": {"type": "array", "minItems": 1, "maxItems": BATCH_ITEMS_MAX, "items": {
                "type": "object", "additionalProperties": False, "required": ["postings"],
                "properties": {
                    "postings": {"type": "array", "minItems": 1, "maxItems": 128, "items": {"oneOf": [
                        {"$ref": "#/components/schemas/Posting"},
                        {"$ref": "#/components/schemas/PostingAtMost"}]}},
                    "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
                    "if_version": {"$ref": "#/components/schemas/IfVersion"},
                    "assert": {"$ref": "#/components/schemas/Assertions"},
                    "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                    "reference": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
                }}},
            "atomic": {"type": "boolean"},
        },
    },
    "VoidRequest": {
        "type": ["object", "null"], "additionalProperties": False,
        "properties": {
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        },
    },
    "Pending": {
        "type": "object", "additionalProperties": False, "required": ["id", "status", "position"],
        "properties": {"id": {"type": "string"}, "status": {"const": "pending"}, "position": {"type": "string"},
                       "name": {"type": "string", "description": "A tenant's creation: its name"}},
    },
    "Account": {
        "type": "object", "additionalProperties": False, "required": ["address", "balances", "position"],
        "properties": {
            "address": {"type": "string"},
            "balances": {"type": "object", "additionalProperties": {"type": "integer"}},
            "held": {"type": "object", "additionalProperties": {"type": "integer"}},
            "available": {"type": "object", "additionalProperties": {"type": "integer"}},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "overdraft_limit": {"type": "object", "additionalProperties": {"type": "integer"}},
            "frozen": {"type": "boolean"},
            "version": {"type": "integer", "minimum": 0,
                        "description": "How many committed records changed the account (if_version compares it)"},
            "position": {"type": ["string", "null"]},
            "at": {"type": "string", "format": "date-time"},
        },
    },
    "Monitor": {
        "type": "object", "additionalProperties": False, "required": ["id", "account", "asset", "status", "position"],
        "properties": {
            "id": {"type": "string"}, "account": {"type": "string"}, "asset": {"type": "string"},
            "below": {"type": ["integer", "null"]}, "above": {"type": ["integer", "null"]},
            "status": {"enum": ["active", "removed"]}, "position": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "removed_at": {"type": "string", "format": "date-time"},
        },
    },
    "MonitorRequest": {
        "type": "object", "additionalProperties": False, "required": ["account", "asset"],
        "properties": {
            "account": {"type": "string"}, "asset": {"type": "string"},
            "below": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807},
            "above": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "reference": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        },
    },
    "Webhook": {
        "type": "object", "additionalProperties": False, "required": ["id", "url", "events", "created_at"],
        "properties": {
            "id": {"type": "string"}, "url": {"type": "string"},
            "events": {"type": "array", "items": {"enum": [*EVENT_TYPES, ANY]}},
            "secret": {"type": "string", "description": "Shown once, when the endpoint is registered"},
            "created_at": {"type": "string", "format": "date-time"},
            "deleted_at": {"type": "string", "format": "date-time"},
        },
    },
    "Limits": {**CLOSED, "properties": {
        "tenant": {"type": "string"}, "writes_per_s": {"type": "integer"}, "reads_per_s": {"type": "integer"},
        "burst_s": {"type": "integer"}}},
    "Entries": {
        "type": "object", "additionalProperties": False, "required": ["entries", "next_cursor"],
        "properties": {
            "entries": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["transaction_id", "asset", "amount", "balance_after", "committed_at"],
                "properties": {"transaction_id": {"type": "string"}, "asset": {"type": "string"},
                               "amount": {"type": "integer"}, "balance_after": {"type": "integer"},
                               "committed_at": {"type": "string", "format": "date-time"}}}},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
}
