"""The two routes called thousands of times a second, served without Starlette's router and middleware stack.

A balance read without query parameters and `GET /healthz` are answered here, through the same handlers'
logic (`routes.authorize`, `routes.account`) and the same error mapping; anything else, these routes with
any query parameter included, goes on to the Starlette app. Starlette's exception middlewares, router and
request objects cost about a third of a balance read's CPU (py-spy); on a 2-core machine shared with the
database that is the difference between saturating below 2,000 reads/s and not.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from api import routes
from api.errors import error_response, http_error_response, internal_error
from api.limits import READS, WRITES, RateLimited
from api.responses import JSON
from ledger.errors import InvalidRequest, LedgerError
from ledger.validation import check_address

HEALTHY = b'{"status":"ok"}'
ACCOUNT_PATH = "/v1/tenants/{tenant}/accounts/{address}"
TRANSFERS_PATH = "/v1/tenants/{tenant}/transactions"
ENTRIES_PATH = "/v1/tenants/{tenant}/accounts/{address}/entries"
# A tenant's resources its keys reach (the operator's are keys and limits); GET and HEAD read.
TENANT_SEGMENTS = frozenset({"transactions", "accounts", "balances", "holds", "chain"})
READ_METHODS = frozenset({"GET", "HEAD"})
BATCH_SUFFIX = "/transactions/batch"


class HotRoutes:
    """Pure ASGI, in front of `app`; sets `scope["route"]` as Starlette's router would, for the metrics."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        by_path = {r.path: r for r in app.routes if isinstance(r, Route)}
        self.account_route = by_path[ACCOUNT_PATH]
        self.health_route = by_path["/healthz"]
        posts = {r.path: r for r in app.routes if isinstance(r, Route) and r.methods and "POST" in r.methods}
        self.transfer_route = posts[TRANSFERS_PATH]
        self.entries_route = by_path[ENTRIES_PATH]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and not scope["query_string"]:
            if path == "/healthz":
                scope["route"] = self.health_route
                await Response(HEALTHY, media_type="application/json")(scope, receive, send)
                return
            parts = path.split("/")
            # ["", "v1", "tenants", tenant, "accounts", address]: Starlette's `{param}` is one non-empty segment.
            if len(parts) == 6 and parts[1] == "v1" and parts[2] == "tenants" and parts[4] == "accounts" \
                    and parts[3] and parts[5]:
                scope["route"] = self.account_route
                answer = await self._account(scope, parts[3], parts[5])
                if isinstance(answer, tuple):
                    await self._answer_refusal(scope, receive, send, *answer)
                else:
                    await answer(scope, receive, send)
                return
        refused = self._refused(scope, path)
        if refused is not None:
            scope["route"] = self._route_of(scope)  # counted under its route, not `unmatched`
            await self._answer_refusal(scope, receive, send, *refused)
            return
        direct = self._direct_route(scope["method"], path)
        if direct is not None:
            await self._call(direct[0], direct[1], scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _direct_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """A write of a transfer, or a page of an account's entries: their route and path parameters, found
        without Starlette's router (which tries the routes in turn, each a regular expression)."""
        parts = path.split("/")
        if len(parts) < 5 or parts[1] != "v1" or parts[2] != "tenants" or not parts[3]:
            return None
        if method == "POST" and len(parts) == 5 and parts[4] == "transactions":
            return self.transfer_route, {"tenant": parts[3]}
        if method == "GET" and len(parts) == 7 and parts[4] == "accounts" and parts[5] and parts[6] == "entries":
            return self.entries_route, {"tenant": parts[3], "address": parts[5]}
        return None

    async def _call(self, route: Route, path_params: dict[str, str], scope: Scope, receive: Receive,
                    send: Send) -> None:
        """`route`'s endpoint as Starlette's router would call it, with the app's exception handling, without
        its router and its two exception middlewares (about 10% of a waited write's CPU in the API, py-spy)."""
        scope["route"], scope["path_params"], scope["app"] = route, path_params, self.app
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except LedgerError as e:
            response = error_response(e)
        except HTTPException as e:
            response = http_error_response(e)
        except Exception as e:
            response = internal_error(e, scope.get("state", {}).get("request_id"), scope["method"], scope["path"])
        await response(scope, receive, send)

    async def _answer_refusal(self, scope: Scope, receive: Receive, send: Send, tenant: str,
                              refusal: RateLimited) -> None:
        """A 429, held first while the tenant is refused often (`TenantLimits.hold_s`): a client looping on
        refusals then costs the process a few hundred a second, not thousands."""
        limits = self.app.state.ctx.limits
        hold = limits.hold_s(tenant)
        if hold:
            with limits.holding(tenant):
                await asyncio.sleep(hold)
        await error_response(refusal)(scope, receive, send)

    def _route_of(self, scope: Scope) -> Route | None:
        """The route Starlette's router would pick for `scope` (only a refusal asks: it skips the router)."""
        for route in self.app.routes:
            if isinstance(route, Route) and route.matches(scope)[0] is Match.FULL:
                return route
        return None

    def _refused(self, scope: Scope, path: str) -> tuple[str, RateLimited] | None:
        """A tenant key's request past its tenant's limit, refused here, before Starlette's routing, middleware
        and exception handling (a refusal must cost a small part of serving): the tenant and its refusal; None
        to go on. A request admitted here is marked, so the route does not count it again."""
        parts = path.split("/", 5)
        if len(parts) < 5 or parts[1] != "v1" or parts[2] != "tenants" or parts[4] not in TENANT_SEGMENTS \
                or path.endswith(BATCH_SUFFIX):  # a batch takes its transactions' tokens at once, in its route
            return None
        kind = READS if scope["method"] in READ_METHODS else WRITES
        context: routes.Context = self.app.state.ctx
        try:
            principal = context.keys.authenticate(_header(scope, b"authorization"))
        except LedgerError:
            return None  # the route answers it: 401, 422
        if principal.key_id is None or principal.tenant != parts[3] or \
                ("read" if kind == READS else "write") not in principal.scopes:
            return None  # the route answers it (403), charging nobody's budget
        try:
            context.limits.admit(parts[3], kind)
        except RateLimited as e:
            return parts[3], e
        scope.setdefault("state", {})["admitted"] = True
        return None

    async def _account(self, scope: Scope, raw_tenant: str, raw_address: str) -> Response | tuple[str, RateLimited]:
        """The balance read's answer, or the tenant and its refusal (held, then answered, by the caller)."""
        context: routes.Context = self.app.state.ctx
        try:
            principal, tenant = routes.authorize(context, _header(scope, b"authorization"), raw_tenant, "read")
            assert tenant is not None
            if principal.key_id is not None:  # a tenant key's read counts against its tenant's limit
                try:
                    context.limits.admit(tenant, READS)
                except RateLimited as e:
                    return tenant, e
            return Response(await routes.account(context, tenant, check_address(raw_address)),
                            media_type=JSON.media_type)
        except LedgerError as e:
            return error_response(e)
        except Exception as e:
            return internal_error(e, scope.get("state", {}).get("request_id"), "GET", scope["path"])


def _header(scope: Scope, name: bytes) -> str | None:
    """A header given at most once (as `api.inputs.header`); a repeated one is refused, never resolved."""
    found = [value for key, value in scope["headers"] if key == name]
    if len(found) > 1:
        raise InvalidRequest(f"the {name.decode()} header is given more than once", name.decode())
    try:
        return found[0].decode("utf-8") if found else None
    except UnicodeDecodeError:
        raise InvalidRequest("must be UTF-8", name.decode()) from None
