"""The request of each kind, built from an HTTP body (the API) or a record's fields (the codec), with the checks
of `ledger.validation` in one order wherever it came from; and a batch's items."""

from __future__ import annotations

from collections.abc import Callable

from ledger.errors import InvalidRequest
from ledger.requests import (
    CAPTURE,
    HOLD,
    MONITOR,
    POLICY,
    REVERSE,
    TRANSFER,
    UNMONITOR,
    VOID,
    CaptureRequest,
    HoldRequest,
    MonitorRequest,
    PolicyRequest,
    ReverseRequest,
    TransactionRequest,
    TransferRequest,
    UnmonitorRequest,
    VoidRequest,
)
from ledger.validation import (
    BATCH_ITEMS_MAX,
    BODY_FIELDS,
    CONDITION_FIELDS,
    check_customer,
    check_id,
    check_object,
    check_tenant,
    parse_conditions,
    parse_expires_in_s,
    parse_frozen,
    parse_idempotency_key,
    parse_limits,
    parse_metadata,
    parse_partial_amount,
    parse_postings_with_max,
    parse_reference,
    parse_watch,
)

# The fields of an HTTP body, per kind of request (the API takes the id, tenant, key and target elsewhere).
BODY_FIELDS_BY_KIND = {
    TRANSFER: BODY_FIELDS | CONDITION_FIELDS,
    HOLD: BODY_FIELDS | CONDITION_FIELDS | {"expires_in_s"},
    CAPTURE: frozenset({"amount", "metadata", "reference"}),
    VOID: frozenset({"metadata", "reference"}),
    REVERSE: frozenset({"amount", "metadata", "reference"}),
    POLICY: frozenset({"metadata", "overdraft_limit", "frozen"}),
    MONITOR: frozenset({"account", "asset", "below", "above", "metadata", "reference"}),
    UNMONITOR: frozenset({"metadata", "reference"}),
}


def build(kind: str, obj: dict[str, object], *, id: object, tenant: str, idempotency_key: object,
          target: Callable[[], str] | None = None, tenant_checked: bool = True,
          id_field: str = "id") -> TransactionRequest:
    """The request of `kind` that `obj` (an HTTP body or a record, its fields already checked against the
    kind's) describes, checked field by field in one order wherever it came from; `tenant` is checked already
    (the record's key) unless `tenant_checked` is False (a producer client's argument: checked after the id, as
    it always was); `target` checks what a capture, void, reversal, policy or removal names (`named`, from the
    path or the record's field); `id_field` names the id in an error (a batch's item). Each constructor is
    called with its keywords spelled out: mypyc builds a native instance directly from those, not from a `**`
    mapping."""
    if kind in (TRANSFER, HOLD):
        postings, maxed = parse_postings_with_max(obj["postings"])
        if_version, asserts = parse_conditions(obj)
    i = check_id(id, id_field)
    if not tenant_checked:
        tenant = check_tenant(tenant)
    key = parse_idempotency_key(idempotency_key)
    meta, ref = parse_metadata(obj.get("metadata")), parse_reference(obj.get("reference"))
    if kind == TRANSFER:
        return TransferRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref,
                               postings=postings, if_version=if_version, asserts=asserts, amount_max=maxed)
    if kind == HOLD:
        return HoldRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref,
                           postings=postings, if_version=if_version, asserts=asserts, amount_max=maxed,
                           expires_in_s=parse_expires_in_s(obj.get("expires_in_s")))
    if kind == MONITOR:
        return MonitorRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref,
                              watch=parse_watch(obj))
    assert target is not None, kind
    named = target()
    if kind == CAPTURE:
        return CaptureRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref, hold=named,
                              amount=parse_partial_amount(obj.get("amount")))
    if kind == VOID:
        return VoidRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref, hold=named)
    if kind == REVERSE:
        return ReverseRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref,
                              transaction=named, amount=parse_partial_amount(obj.get("amount")))
    if kind == POLICY:
        return PolicyRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref, account=named,
                             limits=parse_limits(obj.get("overdraft_limit")), frozen=parse_frozen(obj.get("frozen")))
    assert kind == UNMONITOR, kind
    return UnmonitorRequest(id=i, tenant=tenant, idempotency_key=key, metadata=meta, reference=ref, monitor=named)


def parse_body(body: object, *, id: str, tenant: str, idempotency_key: str | None, kind: str = TRANSFER,
               target: str | None = None) -> TransactionRequest:
    """The request an HTTP body describes; the API supplies the id, tenant, idempotency key and, for a
    capture, void, reversal or account policy, the hold, transaction or account it names (`target`, from
    the path)."""
    obj = check_object({} if body is None and kind in (VOID, CAPTURE, REVERSE, POLICY, UNMONITOR) else body, "body",
                  BODY_FIELDS_BY_KIND[kind])
    if kind in (TRANSFER, HOLD) and "postings" not in obj:
        raise InvalidRequest("missing field 'postings'", "body")
    return build(kind, obj, id=id, tenant=tenant, idempotency_key=idempotency_key, tenant_checked=False,
                 target=named(kind, target, id_field="id", account_field="address"))


def named(kind: str, value: object, *, id_field: str, account_field: str) -> Callable[[], str]:
    """The check of what a capture, void, reversal, policy or removal names: a customer account for a policy,
    an id for the others; `build` calls it in its turn."""
    return lambda: check_customer(value, account_field) if kind == POLICY else check_id(value, id_field)


ITEM_FIELDS = BODY_FIELDS | CONDITION_FIELDS | {"idempotency_key"}


def parse_items(value: object, tenant: str, ids: list[str] | None = None,
                batch_key: str | None = None) -> tuple[TransferRequest, ...]:
    """A batch's transfers: 1 to `BATCH_ITEMS_MAX` bodies, each with its own optional `idempotency_key`, and
    its `id` (given by the API in `ids`, else each item's own `id`: a record on the log). Ids must differ, and
    so must idempotency keys, the batch's own (`batch_key`) included."""
    if not isinstance(value, list) or not 1 <= len(value) <= BATCH_ITEMS_MAX:
        raise InvalidRequest(f"must be a list of 1 to {BATCH_ITEMS_MAX} transfers", "transactions")
    items = []
    for index, item in enumerate(value):
        field = f"transactions[{index}]"
        obj = check_object(item, field, ITEM_FIELDS if ids is not None else ITEM_FIELDS | {"id"})
        if "postings" not in obj:
            raise InvalidRequest("missing field 'postings'", field)
        request = build(TRANSFER, obj, id=ids[index] if ids is not None else obj.get("id"), tenant=tenant,
                        idempotency_key=obj.get("idempotency_key"), id_field=f"{field}.id")
        assert isinstance(request, TransferRequest)
        items.append(request)
    if len({i.id for i in items}) != len(items):
        raise InvalidRequest("ids must differ", "transactions")
    keys = [i.idempotency_key for i in items if i.idempotency_key is not None]
    if batch_key is not None:
        keys.append(batch_key)
    if len(set(keys)) != len(keys):
        # Decided in one record, both would be refused and the key bound to neither.
        raise InvalidRequest("idempotency keys must differ within a batch", "transactions")
    return tuple(items)
