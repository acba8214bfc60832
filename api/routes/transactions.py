"""Writes (transfers, holds and what closes them, reversals, policies, batches) and the reads of transactions."""


from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from api import views
from api.inputs import (
    bool_param,
    check_params,
    encode_transactions_cursor,
    header,
    int_param,
    json_body,
    json_object,
    time_param,
    transactions_cursor_param,
)
from api.limits import WRITES
from api.metrics import ANSWERS_READ, ANSWERS_SENT
from api.responses import JSON, error
from api.routes.common import (
    CONFLICT_MESSAGE,
    ENTRIES_LIMIT_DEFAULT,
    ENTRIES_LIMIT_MAX,
    READ_PARAMS,
    REPLAYED,
    WAIT_TIMEOUT_MS_DEFAULT,
    WRITE_PARAMS,
    Context,
    _decided,
    _replayed,
    _transaction,
    _view,
    authorized,
    caught_up,
    params,
    waited,
    waited_answer,
    waiter_key,
)
from api.store import Store
from ledger.bodies import parse_body, parse_items
from ledger.chain import GENESIS
from ledger.errors import AppendUnconfirmed, InvalidRequest, NotFound
from ledger.positions import Position, PositionKey
from ledger.reasons import IDEMPOTENCY_CONFLICT
from ledger.requests import (
    CAPTURE,
    HOLD,
    POLICY,
    REVERSE,
    TRANSFER,
    VOID,
    BatchRequest,
    CaptureRequest,
    ReverseRequest,
)
from ledger.validation import check_address, check_id, parse_idempotency_key, parse_metadata, parse_reference

log = logging.getLogger("ledger.api")




@params(*WRITE_PARAMS)
async def post_transaction(request: Request) -> Response:
    return await _submit(request, TRANSFER)


@params(*WRITE_PARAMS)
async def post_hold(request: Request) -> Response:
    return await _submit(request, HOLD)


@params(*WRITE_PARAMS)
async def capture_hold(request: Request) -> Response:
    return await _submit(request, CAPTURE)


@params(*WRITE_PARAMS)
async def void_hold(request: Request) -> Response:
    return await _submit(request, VOID)


@params(*WRITE_PARAMS)
async def reverse_transaction(request: Request) -> Response:
    return await _submit(request, REVERSE)



BATCH_FIELDS = frozenset({"transactions", "atomic"})


@params(*WRITE_PARAMS)
async def post_batch(request: Request) -> Response:
    """Up to 1,000 transfers in one request, appended in order in one round trip: each decided on its own,
    or with `"atomic": true` as one record, all committed or all rejected. With `wait=true`, once the last
    is decided, every decision. An `Idempotency-Key` binds the whole batch: one record, whose repeat answers
    with the original transactions (contract v3)."""
    context, principal, tenant = authorized(request, "write", admit=False)  # its transactions' tokens, below
    assert tenant is not None
    wait = bool_param(request, "wait")
    timeout_ms = int_param(request, "timeout_ms", WAIT_TIMEOUT_MS_DEFAULT, 1, context.settings.wait_timeout_ms_max)
    key = parse_idempotency_key(header(request, b"idempotency-key"))
    body = await json_object(request, BATCH_FIELDS)
    atomic = body.get("atomic", False)
    if not isinstance(atomic, bool):
        raise InvalidRequest("must be true or false", "atomic")
    raw = body.get("transactions")
    items = parse_items(raw, tenant, [uuid.uuid4().hex for _ in raw] if isinstance(raw, list) else None, key)
    if principal.key_id is not None:  # a batch counts each of its transactions, taken at once
        context.limits.admit(tenant, WRITES, len(items))
    batch = BatchRequest(uuid.uuid4().hex, tenant, items, key, atomic)
    prior = await _batch_prior(context, tenant, key) if key is not None else None
    try:
        if atomic or key is not None:
            positions = [await context.appender.append(batch, wait)] * len(items)
        else:
            positions = await context.appender.append_many(list(items), wait)
    except AppendUnconfirmed as e:
        return error(503, e.code, e.message, headers={"Retry-After": "1"}, ids=[i.id for i in items])
    if prior is not None:
        return await _batch_replayed(context, tenant, batch, prior)
    tokens = [context.positions.token(tenant, p) for p in positions]
    pending = [{"id": i.id, "status": "pending", "position": t} for i, t in zip(items, tokens, strict=True)]
    if not wait or not await waited(context, max(positions), timeout_ms, tenant, waiter_key(principal)):
        return JSON({"transactions": pending}, status_code=202)
    rows = [await context.store.transaction(tenant, i.id) for i in items]
    if key is not None and any(r is not None and r["replay_of"] is not None for r in rows):
        # Another request with this key was decided while this one was in flight: answer with it.
        prior = await _batch_prior(context, tenant, key)
        if prior is not None:
            return await _batch_replayed(context, tenant, batch, prior)
    if key is not None and all(r is not None and r["reason"] == IDEMPOTENCY_CONFLICT for r in rows):
        bound = await context.store.batch_by_key(tenant, key)
        if bound is None or bound["id"] != batch.id:  # the batch's key, not one of its items', was taken
            return error(409, IDEMPOTENCY_CONFLICT, CONFLICT_MESSAGE, transactions=[
                views.transaction(r, context.positions, tenant) for r in rows if r is not None])
    return JSON({"transactions": [await _transaction(context, tenant, r) if r is not None else p
                                  for r, p in zip(rows, pending, strict=True)]})


async def _batch_prior(context: Context, tenant: str, key: str) -> asyncpg.Record | dict[str, object] | None:
    """What `key` is bound to: a batch (its row: fingerprint and items), another request (its view), or None."""
    batch = await context.store.batch_by_key(tenant, key)
    if batch is not None:
        return batch
    single = await context.store.transaction_by_key(tenant, key)
    return None if single is None else await _view(context, tenant, single)


async def _batch_replayed(context: Context, tenant: str, batch: BatchRequest,
                          prior: asyncpg.Record | dict[str, object]) -> Response:
    """A repeat of a batch's key: 200 with the original batch's transactions, or 409 for another body (or a
    key that a single request bound)."""
    if isinstance(prior, dict):
        return error(409, IDEMPOTENCY_CONFLICT, CONFLICT_MESSAGE, transaction=prior)
    if bytes(prior["fingerprint"]) != batch.fingerprint():
        return error(409, IDEMPOTENCY_CONFLICT, CONFLICT_MESSAGE)
    rows = [await context.store.transaction(tenant, i) for i in prior["items"]]
    return JSON({"transactions": [await _transaction(context, tenant, r) for r in rows if r is not None]},
                headers=REPLAYED)


@params(*WRITE_PARAMS)
async def put_account(request: Request) -> Response:
    return await _submit(request, POLICY)


async def _submit(request: Request, kind: str) -> Response:
    """Append a money request of `kind` to the log, then answer as the contract says for every kind: 202
    pending, or with `wait=true` 201 decided / 409 rejected (404 for a target that does not exist), and 200
    for a repeat of a decided Idempotency-Key."""
    context, principal, tenant = authorized(request, "write")
    assert tenant is not None
    wait = bool_param(request, "wait")
    timeout_ms = int_param(request, "timeout_ms", WAIT_TIMEOUT_MS_DEFAULT, 1, context.settings.wait_timeout_ms_max)
    key = header(request, b"idempotency-key")
    body = await json_body(request, optional=kind not in (TRANSFER, HOLD))
    tx = parse_body(body, id=uuid.uuid4().hex, tenant=tenant, idempotency_key=key, kind=kind,
                    target=request.path_params.get("address" if kind == POLICY else "id"))
    if isinstance(tx, CaptureRequest | ReverseRequest) and tx.amount is not None:
        await _partial_of_one_posting(context, tenant, tx)
    prior = await context.store.transaction_by_key(tenant, key) if key is not None else None
    # Appended even when the key was decided already: the log then records the repeat the same way whether
    # or not the projection had caught up (a replay of the original, or a rejected idempotency_conflict),
    # and the id handed out in any answer resolves.
    try:
        position = await context.appender.append(tx, wait)
    except AppendUnconfirmed as e:
        return error(503, e.code, e.message, headers={"Retry-After": "1"}, id=e.id)
    if prior is not None:
        return _replayed(await _view(context, tenant, prior), tx, bytes(prior["fingerprint"]))
    if log.isEnabledFor(logging.DEBUG):  # at INFO, 9% of the API's CPU for a waited write (py-spy, issue 24)
        log.debug("transaction appended", extra={"request_id": request.state.request_id, "tenant": tenant,
                                                 "transaction_id": tx.id, "position": position.raw()})
    pending = JSON({"id": tx.id, "status": "pending", "position": context.positions.token(tenant, position)},
                   status_code=202)
    if not wait:
        return pending
    if kind == TRANSFER:  # the projector sends a transfer's answer with its progress (`ledger.shown`)
        decided, answer = await waited_answer(context, position, timeout_ms, tenant, waiter_key(principal), tx.id)
        if answer is not None:  # sealed to its position, and this request's (`Progress.deliver`)
            ANSWERS_SENT.inc()
            return _decided(answer)
        if decided:
            ANSWERS_READ.inc()
    else:
        decided = await waited(context, position, timeout_ms, tenant, waiter_key(principal))
    if not decided:
        return pending
    row = await context.store.transaction_answer(tenant, tx.id)  # the row, with what its answer shows
    if row is None:
        return pending
    if row["replay_of"] is None:
        return _decided(await _view(context, tenant, row, answered=True))
    # A repeat of a request decided while this one was in flight: answer with the original.
    original = await context.store.transaction(tenant, row["replay_of"])
    if original is None:
        return pending
    return _replayed(await _view(context, tenant, original), tx, bytes(original["fingerprint"]))


async def _partial_of_one_posting(context: Context, tenant: str, tx: CaptureRequest | ReverseRequest) -> None:
    """A partial capture or reversal of a hold or transaction of several postings is the request's fault: 422
    before it is appended, when the projection knows the target already (else the fold rejects it so)."""
    if isinstance(tx, CaptureRequest):
        target = await context.store.hold(tenant, tx.hold)
    else:
        target = await context.store.transaction(tenant, tx.transaction)
    postings = target["postings"] if target is not None else None
    if isinstance(postings, list) and len(postings) > 1:
        raise InvalidRequest(f"applies only to a hold or transaction of one posting; this one has {len(postings)}: "
                             "omit it to capture or reverse the whole", "amount")



@params(*READ_PARAMS)
async def get_hold(request: Request) -> Response:
    return await _read_by_id(request, "hold", Store.hold, views.hold)


@params(*READ_PARAMS)
async def get_chain(request: Request) -> Response:
    """Contract v3: the tenant's chain, `{"count", "head", "position"}` (an empty one: 0, 64 zeros, null)."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    await caught_up(request, context, principal, tenant)
    row = await context.store.chain(tenant)
    if row is None:
        return JSON({"count": 0, "head": GENESIS, "position": None})
    return JSON({"count": row["count"], "head": bytes(row["head"]).hex(),
                 "position": context.positions.token(tenant, Position(row["log_partition"], row["log_offset"]))})


@params(*READ_PARAMS)
async def get_transaction(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    row_id = check_id(request.path_params["id"])
    await caught_up(request, context, principal, tenant)
    row = await context.store.transaction(tenant, row_id)
    if row is None:
        raise NotFound(f"no transaction {row_id!r}")
    return JSON(await _transaction(context, tenant, row))



async def _read_by_id(request: Request, what: str,
                      fetch: Callable[[Store, str, str], Awaitable[asyncpg.Record | None]],
                      view: Callable[[asyncpg.Record, PositionKey, str], dict[str, Any]]) -> Response:
    """One row by the id in the path, once the projection has reached `min_position`; 404 if none."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    row_id = check_id(request.path_params["id"])
    await caught_up(request, context, principal, tenant)
    row = await fetch(context.store, tenant, row_id)
    if row is None:
        raise NotFound(f"no {what} {row_id!r}")
    return JSON(view(row, context.positions, tenant))


STATUSES = frozenset({"committed", "rejected"})
LIST_PARAMS = frozenset({"account", "reference", "status", "since", "until", "limit", "cursor", "min_position",
                         "timeout_ms"})


def transaction_filters(request: Request) -> dict[str, Any]:
    """The filters of `GET .../transactions`, checked; an unknown parameter is refused, never ignored."""
    check_params(request, LIST_PARAMS, ("metadata.",))
    params = request.query_params
    filters: dict[str, Any] = {}
    if "account" in params:
        filters["account"] = check_address(params["account"], "account")
    if "reference" in params:
        filters["reference"] = parse_reference(params["reference"])
    if "status" in params:
        if params["status"] not in STATUSES:
            raise InvalidRequest(f"must be one of {sorted(STATUSES)}", "status")
        filters["status"] = params["status"]
    filters["since"], filters["until"] = time_param(request, "since"), time_param(request, "until")
    metadata = {k[len("metadata."):]: v for k, v in params.multi_items() if k.startswith("metadata.")}
    if metadata:
        filters["metadata"] = parse_metadata(metadata)
    return filters


@params(*LIST_PARAMS, prefixes=("metadata.",))
async def list_transactions(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    filters = transaction_filters(request)
    limit = int_param(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    before = transactions_cursor_param(request, context.positions, tenant)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.transactions(tenant, filters, before, limit + 1)
    page = rows[:limit]
    next_cursor = (encode_transactions_cursor(context.positions, tenant, page[-1]["log_offset"], page[-1]["id"])
                   if len(rows) > limit else None)
    return JSON({"transactions": [views.transaction(r, context.positions, tenant) for r in page],
                 "next_cursor": next_cursor})
