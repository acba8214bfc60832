"""Events out (contract v3): webhook endpoints and their delivery log, and balance monitors (records on the log,
appended and waited for as every other write)."""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from datetime import datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from api import views
from api.inputs import account_cursor_param, encode_account_cursor, int_param, json_object
from api.responses import JSON, error
from api.routes.common import (
    ENTRIES_LIMIT_DEFAULT,
    ENTRIES_LIMIT_MAX,
    READ_PARAMS,
    WRITE_PARAMS,
    authorized,
    caught_up,
    params,
)
from api.routes.transactions import _read_by_id, _submit
from api.store import Store
from dispatch.events import ANY, EVENT_TYPES
from dispatch.net import UrlNotAllowed, parse_url, resolve
from dispatch.signing import new_secret
from ledger.errors import AlreadyExists, InvalidRequest, NotFound
from ledger.requests import MONITOR, UNMONITOR
from ledger.validation import check_id

WEBHOOKS_PER_TENANT_MAX = 16
WEBHOOK_FIELDS = frozenset({"url", "events"})
URL_LEN_MAX = 2048
ATTEMPTS_LIMIT_DEFAULT = 100
ATTEMPTS_LIMIT_MAX = 1000
RESOLVE_TIMEOUT_S = 3.0
NOT_ALLOWED = ("the URL's host must resolve only to public addresses (not loopback, private, link-local, "
               "multicast or unspecified ones)")
log = logging.getLogger("ledger.api")


def _webhook(row: object, secret: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"id": row["id"], "url": row["url"], "events": list(row["events"]),  # type: ignore
                               "created_at": views.timestamp(row["created_at"])}  # type: ignore
    if secret is not None:
        body["secret"] = secret
    return body


def _events(value: object) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= len(EVENT_TYPES) + 1:
        raise InvalidRequest(f"must be a list of event types, of {', '.join(EVENT_TYPES)} or \"*\"", "events")
    for item in value:
        if item != ANY and item not in EVENT_TYPES:
            raise InvalidRequest(f"unknown event type {item!r}" if isinstance(item, str) else "must be strings",
                                 "events")
    if len(set(value)) != len(value):
        raise InvalidRequest("names an event type twice", "events")
    return list(value)


@params()
async def create_webhook(request: Request) -> Response:
    """Register an endpoint: its URL must not be, or resolve to, an address of this side of the network (a
    server-side request forgery) unless its host is in LEDGER_WEBHOOK_ALLOW_HOSTS; checked again at delivery."""
    context, _, tenant = authorized(request, "write")
    assert tenant is not None
    if tenant not in context.keys.tenants:  # the operator's token names any tenant
        raise NotFound(f"no tenant {tenant!r}")
    body = await json_object(request, WEBHOOK_FIELDS)
    url = body.get("url")
    if not isinstance(url, str) or not 1 <= len(url) <= URL_LEN_MAX:
        raise InvalidRequest(f"must be an http(s) URL of at most {URL_LEN_MAX} characters", "url")
    events = _events(body.get("events"))
    try:
        target = parse_url(url)
    except UrlNotAllowed as e:
        return error(422, "url_not_allowed", e.message)
    # Counted before the name is resolved: a tenant at its limit costs no lookup.
    if await context.store.count_webhooks(tenant) >= WEBHOOKS_PER_TENANT_MAX:
        return _too_many()
    try:
        await resolve(target, context.settings.webhook_allow_hosts, RESOLVE_TIMEOUT_S)
    except UrlNotAllowed as e:
        # What the name resolved to stays in the log: a tenant does not learn this network's names from it.
        log.info("webhook URL refused", extra={"tenant": tenant, "reason": e.message})
        return error(422, "url_not_allowed", NOT_ALLOWED)
    secret = new_secret()
    row = await context.store.create_webhook(tenant, "wh_" + uuid.uuid4().hex, url, events, secret,
                                             WEBHOOKS_PER_TENANT_MAX)
    if row == "too_many":
        return _too_many()
    if row == "taken":
        raise AlreadyExists("an endpoint of this tenant has this URL already")
    assert not isinstance(row, str)
    return JSON(_webhook(row, secret), status_code=201)


def _too_many() -> Response:
    return error(422, "too_many_webhooks", f"a tenant has at most {WEBHOOKS_PER_TENANT_MAX} endpoints; delete one "
                                           "first")


@params()
async def list_webhooks(request: Request) -> Response:
    context, _, tenant = authorized(request, "read")
    assert tenant is not None
    return JSON({"webhooks": [_webhook(r) for r in await context.store.webhooks(tenant)]})


@params()
async def get_webhook(request: Request) -> Response:
    context, _, tenant = authorized(request, "read")
    assert tenant is not None
    row = await context.store.webhook(tenant, check_id(request.path_params["id"]))
    if row is None:
        raise NotFound(f"no webhook {request.path_params['id']!r}")
    return JSON(_webhook(row))


@params()
async def delete_webhook(request: Request) -> Response:
    context, _, tenant = authorized(request, "write")
    assert tenant is not None
    row = await context.store.delete_webhook(tenant, check_id(request.path_params["id"]))
    if row is None:
        raise NotFound(f"no webhook {request.path_params['id']!r}")
    return JSON({**_webhook(row), "deleted_at": views.timestamp(row["deleted_at"])})


def _attempts_cursor(raw: str | None) -> tuple[datetime, str, int] | None:
    if raw is None:
        return None
    try:
        at, event, attempt = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return datetime.fromisoformat(at), str(event), int(attempt)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidRequest("is not a cursor this route gave", "cursor") from None


@params("limit", "cursor")
async def list_deliveries(request: Request) -> Response:
    """An endpoint's delivery attempts, newest first, a page at a time."""
    context, _, tenant = authorized(request, "read")
    assert tenant is not None
    webhook_id = check_id(request.path_params["id"])
    limit = int_param(request, "limit", ATTEMPTS_LIMIT_DEFAULT, 1, ATTEMPTS_LIMIT_MAX)
    before = _attempts_cursor(request.query_params.get("cursor"))
    if await context.store.webhook(tenant, webhook_id) is None:
        raise NotFound(f"no webhook {webhook_id!r}")
    rows = await context.store.attempts(tenant, webhook_id, before, limit + 1)
    page = rows[:limit]
    cursor = None
    if len(rows) > limit:
        last = page[-1]
        cursor = base64.urlsafe_b64encode(orjson.dumps([last["at"].isoformat(), last["event_id"],
                                                        last["attempt"]])).decode().rstrip("=")
    return JSON({"deliveries": [{"event_id": r["event_id"], "type": r["type"], "status_code": r["status_code"],
                                 "error": r["error"], "attempt": r["attempt"], "at": views.timestamp(r["at"])}
                                for r in page], "next_cursor": cursor})


# --- monitors ------------------------------------------------------------------------------------------

@params(*WRITE_PARAMS)
async def create_monitor(request: Request) -> Response:
    return await _submit(request, MONITOR)


@params(*WRITE_PARAMS)
async def delete_monitor(request: Request) -> Response:
    response = await _submit(request, UNMONITOR)
    if response.status_code == 201:  # the monitor, removed: nothing was created
        response.status_code = 200
    return response


@params(*READ_PARAMS)
async def get_monitor(request: Request) -> Response:
    return await _read_by_id(request, "monitor", Store.monitor, views.monitor)


@params("limit", "cursor", "removed", *READ_PARAMS)
async def list_monitors(request: Request) -> Response:
    """The tenant's monitors by id, the active ones (with `removed=true`, the removed ones too)."""
    context, principal, tenant = authorized(request, "read")
    assert tenant is not None
    limit = int_param(request, "limit", ENTRIES_LIMIT_DEFAULT, 1, ENTRIES_LIMIT_MAX)
    removed = request.query_params.get("removed", "false")
    if removed not in ("true", "false"):
        raise InvalidRequest("must be true or false", "removed")
    after = account_cursor_param(request, context.positions, tenant)
    await caught_up(request, context, principal, tenant)
    rows = await context.store.monitors(tenant, after, limit + 1, removed == "true")
    page = rows[:limit]
    cursor = encode_account_cursor(context.positions, tenant, page[-1]["id"]) if len(rows) > limit else None
    return JSON({"monitors": [views.monitor(r, context.positions, tenant) for r in page], "next_cursor": cursor})
