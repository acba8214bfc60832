"""The wire format of `ledger.transactions` and `ledger.outcomes` (CONTRACT.md, "Producing straight to Kafka")."""

from __future__ import annotations

from typing import Any

import orjson

from ledger.errors import InvalidRequest, MalformedJson
from ledger.requests import WIRE_VERSION, TransactionRequest
from ledger.validation import (
    check_id,
    check_tenant,
    parse_idempotency_key,
    parse_metadata,
    parse_postings,
    parse_reference,
)

EVENT_FIELDS = frozenset({"v", "id", "tenant", "postings", "idempotency_key", "metadata", "reference"})
EVENT_REQUIRED = ("v", "id", "tenant", "postings")


def decode_json(raw: bytes | str) -> Any:
    """Parse JSON, or raise `MalformedJson` (never another exception) for anything that is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedJson(f"not valid JSON: {e}") from None


def encode_request(request: TransactionRequest) -> bytes:
    """The value a producer appends for `request`; `decode_request` reads it back unchanged."""
    return orjson.dumps(
        {
            "v": WIRE_VERSION,
            "id": request.id,
            "tenant": request.tenant,
            "postings": [p.as_json() for p in request.postings],
            "idempotency_key": request.idempotency_key,
            "metadata": request.metadata,
            "reference": request.reference,
        }
    )


def decode_request(key: bytes | None, value: bytes | None) -> TransactionRequest:
    """Validate one record of `ledger.transactions`; any flaw raises `InvalidRequest`."""
    if value is None:
        raise InvalidRequest("the record has no value", "value")
    obj = decode_json(value)
    if not isinstance(obj, dict):
        raise InvalidRequest("must be a JSON object", "value")
    missing = [name for name in EVENT_REQUIRED if name not in obj]
    if missing:
        raise InvalidRequest(f"missing field {missing[0]!r}", "value")
    unknown = sorted(set(obj) - EVENT_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", "value")
    if type(obj["v"]) is not int or obj["v"] != WIRE_VERSION:
        raise InvalidRequest(f"unsupported version {obj['v']!r}", "v")
    tenant = check_tenant(obj["tenant"])
    if key is None or key != tenant.encode():
        raise InvalidRequest("the record key must be the tenant id", "key")
    return TransactionRequest(
        id=check_id(obj["id"]),
        tenant=tenant,
        postings=parse_postings(obj["postings"]),
        idempotency_key=parse_idempotency_key(obj.get("idempotency_key")),
        metadata=parse_metadata(obj.get("metadata")),
        reference=parse_reference(obj.get("reference")),
    )


def salvage_identity(key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    """The (tenant, id) of a malformed record when both are readable and valid, so it can be recorded."""
    try:
        obj = orjson.loads(value or b"")
        tenant = check_tenant(obj["tenant"])
        if key != tenant.encode():
            return None
        return tenant, check_id(obj["id"])
    except (orjson.JSONDecodeError, InvalidRequest, TypeError, KeyError):
        return None


def encode_outcome(outcome: dict[str, object]) -> bytes:
    return orjson.dumps(outcome)
