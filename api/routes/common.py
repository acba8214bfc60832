"""What every route shares: the context, query parameters and authentication (with the tenant's limits),
read-your-writes, and how decided requests are shown."""


from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response

from api import views
from api.appender import Appender
from api.auth import KeyStore, Principal
from api.cache import BalanceCache
from api.inputs import (
    check_params,
    header,
    int_param,
    position_param,
)
from api.limits import READS, WRITES, TenantLimits
from api.progress import Progress, TooManyWaiting
from api.responses import JSON, error
from api.store import Store
from infra.settings import Settings
from ledger.chain import CHAINED_KINDS
from ledger.errors import InvalidRequest, NotFound, Unavailable
from ledger.positions import Position, PositionKey
from ledger.reasons import (
    AMOUNT_NEEDS_ONE_POSTING,
    IDEMPOTENCY_CONFLICT,
    MONITORS_PER_ACCOUNT_MAX,
    NOT_FOUND,
    OVERDRAFT_IN_USE,
    TOO_MANY_MONITORS,
)
from ledger.requests import (
    HOLD,
    MONITOR,
    POLICY,
    UNMONITOR,
    VOID,
    TransactionRequest,
)
from ledger.shown import with_effects
from ledger.validation import (
    check_tenant,
)


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


def authorized(request: Request, scope: str, admit: bool = True) -> tuple[Context, Principal, str | None]:
    """Authenticate, then check the path's tenant (if any) against the key's tenant and scopes; then admit a
    tenant key's read or write by its tenant's limits and share of the requests in progress (429 if not)."""
    context = ctx(request)
    principal, tenant = authorize(context, header(request, b"authorization"), request.path_params.get("tenant"),
                                  scope)
    if tenant is not None and principal.key_id is not None and scope in ADMITTED:
        if admit and not getattr(request.state, "admitted", False):  # `api.hot` admits most before routing
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


async def waited_answer(context: Context, position: Position, timeout_ms: int, tenant: str, key: str,
                        id: str) -> tuple[bool, dict[str, Any] | None]:
    """`waited`, and the answer the projector sent for the request `id`, if it sent one (`Progress.decided`)."""
    try:
        return await context.progress.decided(position, timeout_ms / 1000, tenant, key, id)
    except (TooManyWaiting, Unavailable):
        return False, None


def waiter_key(principal: Principal) -> str:
    """The key whose waiting requests are counted together; the operator's token counts as one key."""
    return principal.key_id or ADMIN_WAITER_KEY



REPLAYED = {"Idempotent-Replayed": "true"}
CONFLICT_MESSAGE = "this Idempotency-Key was used with a different body"
# Rejections that are the request's own fault, answered 422 as a malformed request would be.
REQUEST_ERRORS = frozenset({AMOUNT_NEEDS_ONE_POSTING, TOO_MANY_MONITORS})
REJECTION_MESSAGES = {
    AMOUNT_NEEDS_ONE_POSTING: "amount makes a capture or reversal partial, which only a hold or transaction of "
                              "one posting can be; omit it to capture or reverse the whole",
    OVERDRAFT_IN_USE: "a PUT replaces the account's whole policy, and an asset its overdraft_limit does not name "
                      "gets a limit of 0: this account uses its overdraft in one; name its current limits to "
                      "keep them, or pay the overdraft back first",
    TOO_MANY_MONITORS: f"an account takes at most {MONITORS_PER_ACCOUNT_MAX} active monitors; remove one first",
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


async def _view(context: Context, tenant: str, row: asyncpg.Record, answered: bool = False) -> dict[str, object]:
    """How a decided request is shown: a hold, or a void that released one, as the hold; anything else (a
    rejected void included) as the transaction (`answered`: `row` is `Store.transaction_answer`'s, with its
    balances after it and its chain link, so nothing more is read)."""
    if row["kind"] == POLICY and row["status"] == "committed":
        return dict(orjson.loads(await account(context, tenant, row["target"])))
    if row["kind"] in (MONITOR, UNMONITOR) and row["status"] == "committed":
        monitor = await context.store.monitor(tenant, row["id"] if row["kind"] == MONITOR else row["target"])
        if monitor is not None:
            return views.monitor(monitor, context.positions, tenant)
    hold_id = row["id"] if row["kind"] == HOLD else row["target"] if row["kind"] == VOID else None
    if hold_id is None or (row["kind"] == VOID and row["status"] != "committed"):
        if answered:
            link = row if row["hash"] is not None and row["kind"] in CHAINED_KINDS else None
            return transaction_body(row, context.positions, tenant, row["balances_after"] or {}, link)
        return await _transaction(context, tenant, row)
    hold = await context.store.hold(tenant, hold_id)
    return views.hold(hold, context.positions, tenant) if hold is not None \
        else views.transaction(row, context.positions, tenant)


async def _transaction(context: Context, tenant: str, row: asyncpg.Record) -> dict[str, Any]:
    return await transaction_view(context.store, context.positions, tenant, row)


async def transaction_view(store: Store, positions: PositionKey, tenant: str, row: asyncpg.Record) -> dict[str, Any]:
    """A transaction as shown, with `balances_after` (contract v3) when it committed and moved money: every
    touched account's posted balance right after it, from its entries (one indexed lookup)."""
    asked = balances_after_of(row)
    after = await store.balances_after(tenant, asked[0], asked[1], row["log_offset"]) if asked else []
    link = await store.chain_link(tenant, asked[0]) if asked and row["kind"] in CHAINED_KINDS else None
    return transaction_body(row, positions, tenant, balances_of(after), link)


def balances_of(rows: list[asyncpg.Record]) -> dict[str, dict[str, int]]:
    """`api_balances_after`'s rows as a transaction shows them: account -> asset -> balance right after it."""
    after: dict[str, dict[str, int]] = {}
    for r in rows:
        after.setdefault(r["account"], {})[r["asset"]] = r["balance_after"]
    return after


def balances_after_of(row: asyncpg.Record) -> tuple[str, list[str]] | None:
    """For a transaction that committed and moved money: the id its entries carry (a repeat's, its original's)
    and the accounts they touch; else None (nothing to show after it)."""
    postings = row["postings"]
    if row["status"] != "committed" or not isinstance(postings, list) or not postings:
        return None
    return row["replay_of"] or row["id"], sorted({p[side] for p in postings for side in ("source", "destination")})


def transaction_body(row: asyncpg.Record, positions: PositionKey, tenant: str, after: dict[str, dict[str, int]],
                     link: asyncpg.Record | None) -> dict[str, Any]:
    """The transaction's view from its row, its accounts' balances right after it (`balances_of`) and its chain
    link (the dispatcher reads those for many events at once and shows each event's transaction so too)."""
    # No link: not chained, or written before the chain existed (a replay rebuilds it).
    return with_effects(views.transaction(row, positions, tenant), after,
                        None if link is None else bytes(link["hash"]),
                        None if link is None else bytes(link["previous_hash"]))



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
