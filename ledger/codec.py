"""The wire formats: records of `ledger.transactions` and of `ledger.outcomes` (CONTRACT.md, "Producing
straight to Kafka"; docs/wire-format.md documents each record kind's fields)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ledger.bodies import build, named, parse_items
from ledger.errors import InvalidRequest, MalformedJson
from ledger.positions import Position, PositionKey
from ledger.requests import (
    BATCH,
    CAPTURE,
    HOLD,
    MONITOR,
    POLICY,
    REVERSE,
    TENANT,
    TICK,
    TRANSFER,
    UNMONITOR,
    VOID,
    WIRE_VERSION,
    BatchRequest,
    Request,
    TenantRequest,
    Tick,
    TransferRequest,
)
from ledger.validation import check_id, check_tenant, check_tenant_name, parse_idempotency_key

COMMON = frozenset({"v", "kind", "id", "tenant", "idempotency_key", "metadata", "reference"})
# Per kind: the fields it may carry, and those it must.
FIELDS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    TRANSFER: (COMMON | {"postings", "if_version", "assert"}, ("v", "id", "tenant", "postings")),
    HOLD: (COMMON | {"postings", "expires_in_s", "if_version", "assert"}, ("v", "id", "tenant", "postings")),
    CAPTURE: (COMMON | {"hold", "amount"}, ("v", "id", "tenant", "hold")),
    VOID: (COMMON | {"hold"}, ("v", "id", "tenant", "hold")),
    REVERSE: (COMMON | {"transaction", "amount"}, ("v", "id", "tenant", "transaction")),
    POLICY: (COMMON | {"account", "overdraft_limit", "frozen"}, ("v", "kind", "id", "tenant", "account")),
    MONITOR: (COMMON | {"account", "asset", "below", "above"}, ("v", "kind", "id", "tenant", "account", "asset")),
    UNMONITOR: (COMMON | {"monitor"}, ("v", "kind", "id", "tenant", "monitor")),
    TENANT: (frozenset({"v", "kind", "id", "tenant", "name"}), ("v", "kind", "id", "tenant", "name")),
    TICK: (frozenset({"v", "kind"}), ("v", "kind")),
    BATCH: (frozenset({"v", "kind", "id", "tenant", "transactions", "atomic", "idempotency_key"}),
            ("v", "kind", "id", "tenant", "transactions")),
}
TARGET_FIELD = {CAPTURE: "hold", VOID: "hold", REVERSE: "transaction", POLICY: "account", UNMONITOR: "monitor"}


# A JSON string, escapes included: what to blank out before counting the colons that separate members.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _members(value: Any) -> int:
    """How many members the objects in `value` hold, at every level."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def decode_json(raw: bytes | str, field: str = "body") -> Any:
    """Parse JSON, or raise `MalformedJson` for anything that is not JSON and `InvalidRequest` for an object
    that repeats a key: a parser that keeps the first value (a gateway, an audit log) would read another
    request than the ledger, which would keep the last."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedJson(f"not valid JSON: {e}") from None
    text = raw.encode() if isinstance(raw, str) else bytes(raw)
    # Outside strings a colon only separates a member's name from its value: as many as the members parsed,
    # unless a name was repeated (the parser kept one member of several).
    colons = text.count(b":")
    if colons:
        members = _members(value)
        if colons != members and _STRING.sub(b'""', text).count(b":") != members:
            raise InvalidRequest("an object repeats a key", field)
    return value


def _item(request: TransferRequest) -> dict[str, object]:
    return {"id": request.id, "postings": request.postings_json(), "idempotency_key": request.idempotency_key,
            "metadata": request.metadata, "reference": request.reference, **request.conditions_json()}


def encode_request(request: Request) -> bytes:
    """The value a producer appends for `request`; `decode_request` reads it back unchanged."""
    if isinstance(request, BatchRequest):
        body: dict[str, object] = {"v": WIRE_VERSION, "kind": BATCH, "id": request.id, "tenant": request.tenant,
                                   "transactions": [_item(i) for i in request.items]}
        # Only when they differ from an atomic batch without a key, so such a batch's bytes are as before.
        if not request.atomic:
            body["atomic"] = False
        if request.idempotency_key is not None:
            body["idempotency_key"] = request.idempotency_key
        return orjson.dumps(body)
    if isinstance(request, Tick):
        return orjson.dumps({"v": WIRE_VERSION, "kind": TICK})
    if isinstance(request, TenantRequest):
        return orjson.dumps({"v": WIRE_VERSION, "kind": TENANT, "id": request.id, "tenant": request.tenant,
                             "name": request.name})
    body = {"v": WIRE_VERSION, "id": request.id, "tenant": request.tenant}
    if request.kind != TRANSFER:
        body["kind"] = request.kind
    body |= request.wire()
    body |= {"idempotency_key": request.idempotency_key, "metadata": request.metadata,
             "reference": request.reference}
    return orjson.dumps(body)


def _fields(obj: dict[str, Any], allowed: frozenset[str], required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in obj]
    if missing:
        raise InvalidRequest(f"missing field {missing[0]!r}", "value")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", "value")


def decode_request(key: bytes | None, value: bytes | None) -> Request:
    """Validate one record of `ledger.transactions`; any flaw raises `InvalidRequest`."""
    if value is None:
        raise InvalidRequest("the record has no value", "value")
    obj = decode_json(value, "value")
    if not isinstance(obj, dict):
        raise InvalidRequest("must be a JSON object", "value")
    kind = obj.get("kind", TRANSFER)
    if not isinstance(kind, str) or kind not in FIELDS:
        raise InvalidRequest(f"unknown kind {kind!r}" if isinstance(kind, str) else "must be a string", "kind")
    _fields(obj, *FIELDS[kind])
    if type(obj["v"]) is not int or obj["v"] != WIRE_VERSION:
        raise InvalidRequest(f"unsupported version {obj['v']!r}", "v")
    if kind == TICK:
        return Tick()
    tenant = check_tenant(obj["tenant"])
    if key is None or key != tenant.encode():
        raise InvalidRequest("the record key must be the tenant id", "key")
    if kind == TENANT:
        return TenantRequest(id=check_id(obj["id"]), tenant=tenant, name=check_tenant_name(obj["name"]))
    if kind == BATCH:
        atomic = obj.get("atomic", True)
        if not isinstance(atomic, bool):
            raise InvalidRequest("must be true or false", "atomic")
        batch_key = parse_idempotency_key(obj.get("idempotency_key"))
        return BatchRequest(id=check_id(obj["id"]), tenant=tenant,
                            items=parse_items(obj["transactions"], tenant, batch_key=batch_key),
                            idempotency_key=batch_key, atomic=atomic)
    target = named(kind, obj.get(TARGET_FIELD.get(kind, "")), id_field=TARGET_FIELD.get(kind, "id"),
                   account_field="account")
    return build(kind, obj, id=obj["id"], tenant=tenant, idempotency_key=obj.get("idempotency_key"), target=target)


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


def encode_outcome(positions: PositionKey, tenant: str | None, id: str | None, status: str, reason: str | None,
                   position: Position, record: Position, original_id: str | None = None, kind: str | None = None,
                   crossings: list[dict[str, object]] | None = None) -> bytes:
    """An outcome on `ledger.outcomes`: `position` is where the decided request sits (for a replayed
    idempotency key, the original's, with `original_id`), as the tenant's opaque token, which its API clients
    may pass as `min_position`; `record` is the record this outcome answers, in the clear (`<partition>-<offset>`:
    only readers of the log see this topic), which is how a producer matches the outcome to its append; `kind`
    the request's kind, when it has one, and `crossings` the balance monitors a committed transaction crossed
    (contract v3's `balance.crossed`, which the dispatcher sends)."""
    body: dict[str, object] = {"tenant": tenant, "id": id, "status": status, "reason": reason,
                               "position": positions.token(tenant or "", position), "record": record.raw()}
    if original_id is not None:
        body["original_id"] = original_id
    if kind is not None:
        body["kind"] = kind
    if crossings:
        body["crossings"] = crossings
    return orjson.dumps(body)
