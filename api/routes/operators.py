"""The operator's routes: tenants, keys, and each tenant's limits."""


from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from api.auth import SCOPES, new_secret_key
from api.inputs import (
    int_param,
    json_body,
    json_object,
)
from api.limits import Limits, parse_limits
from api.responses import JSON, error
from api.routes.common import (
    TENANT_FIELDS,
    WAIT_TIMEOUT_MS_DEFAULT,
    Context,
    authorized,
    params,
    waited,
    waiter_key,
)
from ledger.errors import AlreadyExists, AppendUnconfirmed, InvalidRequest, NotFound
from ledger.positions import Position
from ledger.requests import (
    TenantRequest,
)
from ledger.validation import (
    check_tenant,
    check_tenant_name,
)

# --- operators -----------------------------------------------------------------------------------------

@params("timeout_ms")
async def create_tenant(request: Request) -> Response:
    """Append the tenant's creation to the log and answer once it is decided: 201 if this request created
    it, 409 if the log already had it (contract v2: tenants are on the log)."""
    context, principal, _ = authorized(request, "admin")
    timeout_ms = int_param(request, "timeout_ms", WAIT_TIMEOUT_MS_DEFAULT, 1, context.settings.wait_timeout_ms_max)
    body = await json_object(request, TENANT_FIELDS)
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
    await _limits(context, tenant)  # 404 for a tenant that does not exist
    body = await json_body(request)
    given = parse_limits(body, context.limits.defaults)  # checked; what it omits is kept
    # Merged in one statement: concurrent PUTs naming different fields keep each other's.
    row = await context.store.set_limits(tenant, *(given.as_json()[f] if f in body else None for f in LIMIT_ORDER),
                                         *(context.limits.defaults.as_json()[f] for f in LIMIT_ORDER))
    limits = Limits(row["writes_per_s"], row["reads_per_s"], row["burst_s"])
    context.limits.set(tenant, limits)  # this process at once; the others on the notification
    return JSON({"tenant": tenant, **limits.as_json()})


LIMIT_ORDER = ("writes_per_s", "reads_per_s", "burst_s")


async def _limits(context: Context, tenant: str) -> Limits:
    if tenant not in context.keys.tenants:
        raise NotFound(f"no tenant {tenant!r}")
    row = await context.store.limits_of(tenant)
    return context.limits.defaults if row is None else Limits(row["writes_per_s"], row["reads_per_s"],
                                                              row["burst_s"])
