"""The contract's routes. Each handler authenticates from memory, validates, then does one thing."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import views
from api.appender import Appender, AppendUnconfirmed
from api.auth import SCOPES, KeyStore, Principal, new_secret_key
from api.cache import BalanceCache
from api.limits import READS, WRITES, Limits, TenantLimits, parse_limits
from api.progress import Progress, TooManyWaiting
from api.requests import (
    LEG_MAX,
    account_cursor_param,
    bool_param,
    check_params,
    cursor_param,
    encode_account_cursor,
    encode_cursor,
    encode_transactions_cursor,
    header,
    int_param,
    json_body,
    position_param,
    prefix_param,
    time_param,
    transactions_cursor_param,
)
from api.responses import JSON, error
from api.store import Store
from infra.settings import Settings
from ledger.decisions import AMOUNT_NEEDS_ONE_POSTING, IDEMPOTENCY_CONFLICT, NOT_FOUND, OVERDRAFT_IN_USE
from ledger.errors import AlreadyExists, InvalidRequest, NotFound, Unavailable
from ledger.positions import OFFSET_MAX, Position, PositionKey
from ledger.requests import (
    CAPTURE,
    HOLD,
    POLICY,
    REVERSE,
    TRANSFER,
    VOID,
    BatchRequest,
    TenantRequest,
    TransactionRequest,
)
from ledger.validation import (
    BALANCE_MAX,
    BALANCE_MIN,
    check_address,
    check_asset,
    check_id,
    check_tenant,
    check_tenant_name,
    parse_body,
    parse_idempotency_key,
    parse_items,
    parse_metadata,
    parse_reference,
)

log = logging.getLogger("ledger.api")


class SumOutOfRange(InvalidRequest):
    code = "sum_out_of_range"

WAIT_TIMEOUT_MS_DEFAULT = 5000
ENTRIES_LIMIT_DEFAULT = 50
ENTRIES_LIMIT_MAX = 500
TENANT_FIELDS = frozenset({"id", "name"})
ADMIN_WAITER_KEY = "(admin)"  # key ids are hex, so no tenant key can share this name


@dataclass(slots=True)
class Context:
    """What every handler shares, built by the app's lifespan."""

    settings: Settings
    keys: KeyStore
    store: Store
    appender: Appender
    progress: Progress
    positions: PositionKey  # seals the positions clients see into tenant-bound tokens, and opens theirs
    cache: BalanceCache
    limits: TenantLimits  # fair shares: each tenant's limits and its requests in progress


Handler = Callable[[Request], Awaitable[Response]]


def params(*names: str, prefixes: tuple[str, ...] = (),
           repeatable: frozenset[str] = frozenset()) -> Callable[[Handler], Handler]:
    """The query parameters a route takes: any other, and any given twice (but a list parameter, in
    `repeatable`), is refused with 422."""
    allowed = frozenset(names)

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: Request) -> Response:
            check_params(request, allowed, prefixes, repeatable)
            try:
                return await handler(request)
            finally:
                slot = getattr(request.state, "slot", None)  # taken by `authorized` for a tenant's request
                if slot is not None:
                    slot.__exit__(None, None, None)
        return checked
    return wrap


WRITE_PARAMS = ("wait", "timeout_ms")
READ_PARAMS = ("min_position", "timeout_ms")


def ctx(request: Request) -> Context:
    context: Context = request.app.state.ctx
    return context


def authorized(request: Request, scope: str) -> tuple[Context, Principal, str | None]:
    """Authenticate, then check the path's tenant (if any) against the key's tenant and scopes; then admit a
    tenant key's read or write by its tenant's limits and share of the requests in progress (429 if not)."""
    context = ctx(request)
    principal, tenant = authorize(context, header(request, b"authorization"), request.path_params.get("tenant"),
                                  scope)
    if tenant is not None and principal.key_id is not None and scope in ADMITTED:
        if not getattr(request.state, "admitted", False):  # `api.hot` admits most before routing
            context.limits.admit(tenant, ADMITTED[scope])
        slot = context.limits.slot(tenant, ADMITTED[scope])
        slot.__enter__()
        request.state.slot = slot  # left by the `params` wrapper once the handler is done
    return context, principal, tenant


# What a tenant key's request counts against; the operator's token (key_id None) counts against nothing.
ADMITTED = {"read": READS, "write": WRITES}


def authorize(context: Context, authorization: str | None, raw_tenant: str | None,
              scope: str) -> tuple[Principal, str | None]:
    """`authorized` without a Starlette request, for `api.hot`."""
    principal = context.keys.authenticate(authorization)
    tenant = None if raw_tenant is None else check_tenant(raw_tenant)
    principal.require(tenant, scope)
    if tenant is not None and scope != "admin" and tenant not in context.keys.tenants:
        raise NotFound(f"no tenant {tenant!r}")
    return principal, tenant


async def caught_up(request: Request, context: Context, principal: Principal, tenant: str) -> None:
    """Read your writes: wait until `min_position` is applied, or 503 after `timeout_ms`. A position the log
    has not reached is refused at once: no write can be behind it yet."""
    position = position_param(request, context.positions, tenant)
    if position is None:
        return
    timeout_ms = int_param(request, "timeout_ms", WAIT_TIMEOUT_MS_DEFAULT, 1, context.settings.wait_timeout_ms_max)
    if context.progress.reached(position):
        return
    if await context.appender.ends.beyond(position):
        raise InvalidRequest("this position is beyond the end of the log", "min_position")
    if not await context.progress.wait(position, timeout_ms / 1000, tenant, waiter_key(principal)):
        raise Unavailable("the projection has not reached this position yet")


async def waited(context: Context, position: Position, timeout_ms: int, tenant: str, key: str) -> bool:
    """For a request already appended: whether it was decided within `timeout_ms`. A full waiting room is
    "not yet" here, never an error: the record is on the log, and a client told 429 or 503 would retry it."""
    try:
        return await context.progress.wait(position, timeout_ms / 1000, tenant, key)
    except (TooManyWaiting, Unavailable):
        return False


def waiter_key(principal: Principal) -> str:
    """The key whose waiting requests are counted together; the operator's token counts as one key."""
    return principal.key_id or ADMIN_WAITER_KEY


# --- operators -----------------------------------------------------------------------------------------

@params("timeout_ms")
async def create_tenant(request: Request) -> Response:
    """Append the tenant's creation to the log and answer once it is decided: 201 if this request created
    it, 409 if the log already had it (contract v2: tenants are on the log)."""
    context, principal, _ = authorized(request, "admin")
    timeout_ms = int_param(request, "timeout_ms", WAIT_TIMEOUT_MS_DEFAULT, 1, context.settings.wait_timeout_ms_max)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest("must be an object", "body")
    unknown = sorted(set(body) - TENANT_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", "body")
    tenant = check_tenant(body.get("id"), "id")
    name = check_tenant_name(body.get("name", tenant))
    if tenant in context.keys.tenants:
        raise AlreadyExists(f"tenant {tenant!r} exists")
    try:
        position = await context.appender.append(TenantRequest(uuid.uuid4().hex, tenant, name))
    except AppendUnconfirmed as e:
        return error(503, e.code, e.message, headers={"Retry-After": "1"})
    if not await waited(context, position, timeout_ms, tenant, waiter_key(principal)):
        # Appended, not decided in time: as a transaction would be (a retry then answers 201 or 409).
        return JSON({"id": tenant, "name": name, "status": "pending",
                     "position": context.positions.token(tenant, position)}, status_code=202)
    await context.keys.load_change(context.store.pool, f"tenant:{tenant}")
    row = await context.store.tenant(tenant)
    if row is None or Position(row["log_partition"], row["log_offset"]) != position:
        raise AlreadyExists(f"tenant {tenant!r} exists")
    return JSON({"id": tenant, "name": name, "position": context.positions.token(tenant, position)},
                status_code=201)


@params()
async def create_key(request: Request) -> Response:
    context, _, tenant = authorized(request, "admin")
    assert tenant is not None
    if tenant not in context.keys.tenants:
        raise NotFound(f"no tenant {tenant!r}")
    body = await json_body(request)
    scopes = body.get("scopes") if isinstance(body, dict) else None
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) and s in SCOPES for s in scopes):
        raise InvalidRequest(f"must be a non-empty list of {sorted(SCOPES)}", "scopes")
    key_id, key, digest = new_secret_key()
    ordered = sorted(set(scopes))
    await context.store.create_key(key_id, tenant, digest, ordered)
    async with context.store.connection() as conn:
        await context.keys.load_change(conn, f"key:{key_id}")
    return JSON({"id": key_id, "key": key, "scopes": ordered}, status_code=201)


@params()
async def revoke_key(request: Request) -> Response:
    context, _, tenant = authorized(request, "admin")
    assert tenant is not None
    key_id = request.path_params["key_id"]
    await context.store.revoke_key(tenant, key_id)
    async with context.store.connection() as conn:
        await context.keys.load_change(conn, f"key:{key_id}")
    return Response(status_code=204)


# --- transactions --------------------------------------------------------------------------------------

REPLAYED = {"Idempotent-Replayed": "true"}
CONFLICT_MESSAGE = "this Idempotency-Key was used with a different body"
# Rejections that are the request's own fault, answered 422 as a malformed request would be.
REQUEST_ERRORS = frozenset({AMOUNT_NEEDS_ONE_POSTING})
REJECTION_MESSAGES = {
    AMOUNT_NEEDS_ONE_POSTING: "amount makes a capture or reversal partial, which only a hold or transaction of "
                              "one posting can be; omit it to capture or reverse the whole",
    OVERDRAFT_IN_USE: "a PUT replaces the account's whole policy, and an asset its overdraft_limit does not name "
                      "gets a limit of 0: this account uses its overdraft in one; name its current limits to "
                      "keep them, or pay the overdraft back first",
}


def _replayed(original: dict[str, object], request: TransactionRequest, fingerprint: bytes) -> Response:
    """A repeat of a decided Idempotency-Key: the original decision, with the status it had (contract v3: 200
    committed, 409 rejected, 404 for a target that did not exist), or 409 for another body."""
    if fingerprint != request.fingerprint():
        return error(409, IDEMPOTENCY_CONFLICT, CONFLICT_MESSAGE, transaction=original)
    return _decided(original, 200, REPLAYED)


def _decided(row_view: dict[str, object], status: int = 201, headers: dict[str, str] | None = None) -> Response:
    if row_view.get("status") != "rejected":  # committed, a hold's state, or an account its policy set
        return JSON(row_view, status_code=status, headers=headers)
    reason = str(row_view.get("reason"))
    # A capture, void or reversal naming a hold or transaction this tenant does not have: as if it did not exist.
    status = 404 if reason == NOT_FOUND else 422 if reason in REQUEST_ERRORS else 409
    message = REJECTION_MESSAGES.get(reason, f"the ledger rejected the request: {reason}")
    return error(status, reason, message, headers=headers, transaction=row_view)


async def _view(context: Context, tenant: str, row: asyncpg.Record) -> dict[str, object]:
    """How a decided request is shown: a hold, or a void that released one, as the hold; anything else (a
    rejected void included) as the transaction."""
    if row["kind"] == POLICY and row["status"] == "committed":
        return dict(orjson.loads(await account(context, tenant, row["target"])))
    hold_id = row["id"] if row["kind"] == HOLD else row["target"] if row["kind"] == VOID else None
    if hold_id is None or (row["kind"] == VOID and row["status"] != "committed"):
        return await _transaction(context, tenant, row)
    hold = await context.store.hold(tenant, hold_id)
    return views.hold(hold, context.positions, tenant) if hold is not None \
        else views.transaction(row, context.positions, tenant)


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


@params()
async def get_limits(request: Request) -> Response:
    """A tenant's limits in force: the operator's, or the defaults (contract v3, admin)."""
    context, _, tenant = authorized(request, "admin")
    assert tenant is not None
    return JSON({"tenant": tenant, **(await _limits(context, tenant)).as_json()})


@params()
async def put_limits(request: Request) -> Response:
    """Set any of a tenant's limits (the others kept); every API process applies them within a second."""
    context, _, tenant = authorized(request, "admin")
    assert tenant is not None
    limits = parse_limits(await json_body(request), await _limits(context, tenant))
    await context.store.set_limits(tenant, limits.writes_per_s, limits.reads_per_s, limits.burst_s)
    context.limits.set(tenant, limits)  # this process at once; the others on the notification
    return JSON({"tenant": tenant, **limits.as_json()})


async def _limits(context: Context, tenant: str) -> Limits:
    if tenant not in context.keys.tenants:
        raise NotFound(f"no tenant {tenant!r}")
    row = await context.store.limits_of(tenant)
    return context.limits.defaults if row is None else Limits(row["writes_per_s"], row["reads_per_s"],
                                                              row["burst_s"])


BATCH_FIELDS = frozenset({"transactions", "atomic"})


@params(*WRITE_PARAMS)
async def post_batch(request: Request) -> Response:
    """Up to 1,000 transfers in one request, appended in order in one round trip: each decided on its own,
    or with `"atomic": true` as one record, all committed or all rejected. With `wait=true`, once the last
    is decided, every decision. An `Idempotency-Key` binds the whole batch: one record, whose repeat answers
    with the original transactions (contract v3)."""
    context, principal, tenant = authorized(request, "write")
    assert tenant is not None
    wait = bool_param(request, "wait")
    timeout_ms = int_param(request, "timeout_ms", WAIT_TIMEOUT_MS_DEFAULT, 1, context.settings.wait_timeout_ms_max)
    key = parse_idempotency_key(header(request, b"idempotency-key"))
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest("must be an object", "body")
    unknown = sorted(set(body) - BATCH_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", "body")
    atomic = body.get("atomic", False)
    if not isinstance(atomic, bool):
        raise InvalidRequest("must be true or false", "atomic")
    raw = body.get("transactions")
    items = parse_items(raw, tenant, [uuid.uuid4().hex for _ in raw] if isinstance(raw, list) else None, key)
    if len(items) > 1 and principal.key_id is not None:  # a batch counts each of its transactions
        context.limits.admit(tenant, WRITES, len(items) - 1)
    batch = BatchRequest(uuid.uuid4().hex, tenant, items, key, atomic)
    prior = await _batch_prior(context, tenant, key) if key is not None else None
    try:
        if atomic or key is not None:
            positions = [await context.appender.append(batch)] * len(items)
        else:
            positions = await context.appender.append_many(list(items))
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
    return JSON({"transactions": [views.transaction(r, context.positions, tenant) if r is not None else p
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
    return JSON({"transactions": [views.transaction(r, context.positions, tenant) for r in rows if r is not None]},
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
    if tx.amount is not None:
        await _partial_of_one_posting(context, tenant, tx)
    prior = await context.store.transaction_by_key(tenant, key) if key is not None else None
    # Appended even when the key was decided already: the log then records the repeat the same way whether
    # or not the projection had caught up (a replay of the original, or a rejected idempotency_conflict),
    # and the id handed out in any answer resolves.
    try:
        position = await context.appender.append(tx)
    except AppendUnconfirmed as e:
        return error(503, e.code, e.message, headers={"Retry-After": "1"}, id=e.transaction_id)
    if prior is not None:
        return _replayed(await _view(context, tenant, prior), tx, bytes(prior["fingerprint"]))
    log.info("transaction appended", extra={"request_id": request.state.request_id, "tenant": tenant,
                                            "transaction_id": tx.id, "position": position.raw()})
    pending = JSON({"id": tx.id, "status": "pending", "position": context.positions.token(tenant, position)},
                   status_code=202)
    if not wait or not await waited(context, position, timeout_ms, tenant, waiter_key(principal)):
        return pending
    row = await context.store.transaction(tenant, tx.id)
    if row is None:
        return pending
    if row["replay_of"] is None:
        return _decided(await _view(context, tenant, row))
    # A repeat of a request decided while this one was in flight: answer with the original.
    original = await context.store.transaction(tenant, row["replay_of"])
    if original is None:
        return pending
    return _replayed(await _view(context, tenant, original), tx, bytes(original["fingerprint"]))


async def _partial_of_one_posting(context: Context, tenant: str, tx: TransactionRequest) -> None:
    """A partial capture or reversal of a hold or transaction of several postings is the request's fault: 422
    before it is appended, when the projection knows the target already (else the fold rejects it so)."""
    assert tx.target is not None
    target = await (context.store.hold if tx.kind == CAPTURE else context.store.transaction)(tenant, tx.target)
    postings = target["postings"] if target is not None else None
    if isinstance(postings, list) and len(postings) > 1:
        raise InvalidRequest(f"applies only to a hold or transaction of one posting; this one has {len(postings)}: "
                             "omit it to capture or reverse the whole", "amount")


@params(*READ_PARAMS)
async def get_hold(request: Request) -> Response:
    return await _read_by_id(request, "hold", Store.hold, views.hold)


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


async def _transaction(context: Context, tenant: str, row: asyncpg.Record) -> dict[str, Any]:
    """A transaction as shown, with `balances_after` (contract v3) when it committed and moved money: every
    touched account's posted balance right after it, from its entries (one indexed lookup)."""
    body = views.transaction(row, context.positions, tenant)
    postings = row["postings"]
    if row["status"] == "committed" and isinstance(postings, list) and postings:
        accounts = sorted({p[side] for p in postings for side in ("source", "destination")})
        original = row["replay_of"] or row["id"]
        after: dict[str, dict[str, int]] = {}
        for r in await context.store.balances_after(tenant, original, accounts, row["log_offset"]):
            after.setdefault(r["account"], {})[r["asset"]] = r["balance_after"]
        if after:
            body["balances_after"] = after
    return body


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


SNAPSHOT_ADDRESSES_MAX = 100


@params("prefix", "limit", "cursor", "address", *READ_PARAMS, repeatable=frozenset({"address"}))
async def list_accounts(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    if "address" in request.query_params:
        return await _snapshot(request, context, principal, tenant)
    low, high = prefix_param(request)
    limit = int_param(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    after = account_cursor_param(request, context.positions, tenant)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.accounts(tenant, low, high, after, limit + 1)
    by_account: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_account.setdefault(row["account"], []).append(row)
    names = list(by_account)[:limit]
    next_cursor = encode_account_cursor(context.positions, tenant, names[-1]) if len(by_account) > limit else None
    return JSON({"accounts": [views.account(name, by_account[name], context.positions, tenant) for name in names],
                 "next_cursor": next_cursor})


async def _snapshot(request: Request, context: Context, principal: Principal, tenant: str) -> Response:
    """Contract v3's snapshot read: the accounts asked, in their order, all as of one position of the log
    (one statement: one snapshot of rows the projector commits with their offsets)."""
    mixed = sorted({"prefix", "limit", "cursor"} & set(request.query_params))
    if mixed:
        raise InvalidRequest(f"{mixed[0]!r} does not go with address (a snapshot read is not paged)", "query")
    raw = request.query_params.getlist("address")
    if not 1 <= len(raw) <= SNAPSHOT_ADDRESSES_MAX:
        raise InvalidRequest(f"give 1 to {SNAPSHOT_ADDRESSES_MAX} addresses", "address")
    addresses = [check_address(a, "address") for a in raw]
    await caught_up(request, context, principal, tenant)
    rows = await context.store.snapshot(tenant, list(dict.fromkeys(addresses)))
    by_account: dict[str, list[asyncpg.Record]] = {}
    position = None
    for row in rows:
        if row["account"] is not None:
            by_account.setdefault(row["account"], []).append(row)
        elif row["log_offset"] >= 0:
            position = context.positions.token(tenant, Position(row["log_partition"], row["log_offset"]))
    return JSON({"accounts": [views.account(a, by_account.get(a, []), context.positions, tenant) for a in addresses],
                 "position": position})


@params("prefix", *READ_PARAMS)
async def balance_sums(request: Request) -> Response:
    """Per asset, the sum of the matching accounts' balances: an int64, like every amount the API shows, or
    422 `sum_out_of_range` naming the asset (a narrower prefix sums fewer accounts)."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    low, high = prefix_param(request)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.balance_sums(tenant, low, high)
    sums = {r["asset"]: int(r["balance"]) for r in rows if r["asset"] is not None}
    for asset, total in sums.items():
        if not BALANCE_MIN <= total <= BALANCE_MAX:
            raise SumOutOfRange(f"the balances of {asset} sum past the 64-bit range; ask for a narrower prefix",
                                "prefix")
    return JSON({"prefix": low, "balances": sums,
                 "accounts": next((r["accounts"] for r in rows if r["asset"] is None), 0)})


# --- accounts ------------------------------------------------------------------------------------------

@params("at", *READ_PARAMS)
async def get_account(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    address = check_address(request.path_params["address"])
    at = time_param(request, "at")
    await caught_up(request, context, principal, tenant)
    if at is not None:
        rows = await context.store.balances_at(tenant, address, at)
        return JSON({"address": address, "balances": {r["asset"]: r["balance"] for r in rows}, "position": None,
                     "at": views.timestamp(at)})
    return Response(await account(context, tenant, address), media_type=JSON.media_type)


async def account(context: Context, tenant: str, address: str) -> bytes:
    """An account's balances now, and the position of the last request that changed them: from the balance
    cache when it has them (after `caught_up`, once it has applied the position asked for), else read."""
    cache = context.cache
    body = cache.get(tenant, address)
    if body is not None:
        return body
    ticket = cache.reading(tenant, address)
    try:
        rows = await context.store.balances(tenant, address)
    except BaseException:
        cache.abandon(ticket)
        raise
    body = orjson.dumps(views.account(address, rows, context.positions, tenant))
    cache.fill(ticket, tenant, address, body)
    return body


CSV_PAGE = 500
CSV_HEADER = b"transaction_id,asset,amount,balance_after,committed_at\r\n"


async def _entries_csv(request: Request, context: Context, principal: Principal, tenant: str, address: str,
                       asset: str | None) -> Response:
    """Contract v3's export: every entry of the filters as CSV, newest first, streamed in keyset pages of
    `CSV_PAGE` (no page limit, and never the whole history in memory). Fields need no quoting: ids, assets,
    integers and times hold no comma, quote or line break."""
    paged = sorted({"limit", "cursor"} & set(request.query_params))
    if paged:
        raise InvalidRequest(f"{paged[0]!r} does not go with a CSV export, which has every entry", "query")
    await caught_up(request, context, principal, tenant)

    async def lines() -> AsyncIterator[bytes]:
        yield CSV_HEADER
        before = (OFFSET_MAX, LEG_MAX)
        while True:
            rows = await context.store.entries(tenant, address, asset, before, CSV_PAGE)
            yield "".join(f"{r['transaction_id']},{r['asset']},{r['amount']},{r['balance_after']},"
                          f"{views.timestamp(r['committed_at'])}\r\n" for r in rows).encode()
            if len(rows) < CSV_PAGE:
                return
            before = (rows[-1]["log_offset"], rows[-1]["leg"])

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{address}.csv"'})


@params("asset", "from", "until", *READ_PARAMS)
async def get_statement(request: Request) -> Response:
    """Contract v3's statement of a period (`until` exclusive; by default the account's first entry to now):
    opening and closing balances, debits (positive), credits, and the count of entries, from two lookups a side
    of the entries' running totals, whatever the period's length."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    address = check_address(request.path_params["address"])
    raw_asset = request.query_params.get("asset")
    if raw_asset is None:
        raise InvalidRequest("is required: a statement is of one asset", "asset")
    asset = check_asset(raw_asset)
    since, until = time_param(request, "from"), time_param(request, "until")
    if since is not None and until is not None and until < since:
        raise InvalidRequest("must not be before from", "until")
    await caught_up(request, context, principal, tenant)
    asked_at = datetime.now(UTC)
    rows = {r["side"]: r for r in await context.store.statement(tenant, address, asset, since, until)}
    opening_row, closing_row = rows["from"], rows["until"]
    opening, closing = opening_row["balance_after"] or 0, closing_row["balance_after"] or 0
    credits = int(closing_row["credits_total"] or 0) - int(opening_row["credits_total"] or 0)
    count = (closing_row["entry_number"] or 0) - (opening_row["entry_number"] or 0)
    return JSON({"address": address, "asset": asset,
                 "from": views.timestamp(since if since is not None else opening_row["first_at"] or asked_at),
                 "until": views.timestamp(until if until is not None else asked_at),
                 "opening": opening, "closing": closing, "debits": views.amount(credits - (closing - opening)),
                 "credits": views.amount(credits), "count": count})


@params("asset", "limit", "cursor", *READ_PARAMS)
async def get_entries(request: Request) -> Response:
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    address = check_address(request.path_params["address"])
    raw_asset = request.query_params.get("asset")
    asset = None if raw_asset is None else check_asset(raw_asset)
    if "text/csv" in (request.headers.get("accept") or ""):
        return await _entries_csv(request, context, principal, tenant, address, asset)
    limit = int_param(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    before = cursor_param(request, context.positions, tenant)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.entries(tenant, address, asset, before, limit + 1)
    page = rows[:limit]
    next_cursor = (encode_cursor(context.positions, tenant, page[-1]["log_offset"], page[-1]["leg"])
                   if len(rows) > limit else None)
    return JSON({"entries": [views.entry(r) for r in page], "next_cursor": next_cursor})
