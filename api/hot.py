"""The two routes called thousands of times a second, served without Starlette's router and middleware stack.

A balance read without query parameters and `GET /healthz` are answered here, through the same handlers'
logic (`routes.authorize`, `routes.account`) and the same error mapping; anything else, these routes with
any query parameter included, goes on to the Starlette app. Starlette's exception middlewares, router and
request objects cost about a third of a balance read's CPU (py-spy); on a 2-core machine shared with the
database that is the difference between saturating below 2,000 reads/s and not.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api import routes
from api.errors import error_response, internal_error
from api.limits import READS
from api.responses import JSON
from ledger.errors import InvalidRequest, LedgerError
from ledger.validation import check_address

HEALTHY = b'{"status":"ok"}'
ACCOUNT_PATH = "/v1/tenants/{tenant}/accounts/{address}"


class HotRoutes:
    """Pure ASGI, in front of `app`; sets `scope["route"]` as Starlette's router would, for the metrics."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        by_path = {r.path: r for r in app.routes if isinstance(r, Route)}
        self.account_route = by_path[ACCOUNT_PATH]
        self.health_route = by_path["/healthz"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/healthz":
            scope["route"] = self.health_route
            await Response(HEALTHY, media_type="application/json")(scope, receive, send)
            return
        parts = path.split("/")
        # ["", "v1", "tenants", tenant, "accounts", address]: Starlette's `{param}` is one non-empty segment.
        if len(parts) != 6 or parts[1] != "v1" or parts[2] != "tenants" or parts[4] != "accounts" \
                or not parts[3] or not parts[5]:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.account_route
        await (await self._account(scope, parts[3], parts[5]))(scope, receive, send)

    async def _account(self, scope: Scope, raw_tenant: str, raw_address: str) -> Response:
        context: routes.Context = self.app.state.ctx
        try:
            principal, tenant = routes.authorize(context, _header(scope, b"authorization"), raw_tenant, "read")
            assert tenant is not None
            if principal.key_id is not None:  # a tenant key's read counts against its tenant's limit
                context.limits.admit(tenant, READS)
            return Response(await routes.account(context, tenant, check_address(raw_address)),
                            media_type=JSON.media_type)
        except LedgerError as e:
            return error_response(e)
        except Exception:
            return internal_error(scope.get("state", {}).get("request_id"), "GET", scope["path"])


def _header(scope: Scope, name: bytes) -> str | None:
    """A header given at most once (as `api.requests.header`); a repeated one is refused, never resolved."""
    found = [value for key, value in scope["headers"] if key == name]
    if len(found) > 1:
        raise InvalidRequest(f"the {name.decode()} header is given more than once", name.decode())
    try:
        return found[0].decode("utf-8") if found else None
    except UnicodeDecodeError:
        raise InvalidRequest("must be UTF-8", name.decode()) from None
