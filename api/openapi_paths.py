"""The OpenAPI document's paths: every route, its parameters, request body and answers."""

from __future__ import annotations

from typing import Any

from api.auth import KEY_ID_RE
from api.openapi_schemas import CLOSED
from api.routes import ENTRIES_LIMIT_DEFAULT, ENTRIES_LIMIT_MAX
from dispatch.events import ANY, EVENT_TYPES
from ledger.validation import ADDRESS_RE, ID_RE, TENANT_NAME_LEN_MAX, TENANT_RE

ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


COMMON_ERRORS = {
    "400": _err("Malformed JSON"),
    "401": _err("Missing or unknown key"),
    "403": _err("Key used outside its tenant or scope"),
    "404": _err("Unknown tenant or resource"),
    "422": _err("Invalid input: a bad field, a JSON object that repeats a key, an unknown or repeated query "
                "parameter, a repeated Authorization or Idempotency-Key header"),
    "429": _err("rate_limited: past the tenant's limits, or shed as the heaviest tenant of a full API; or too "
                "many requests of this tenant or key wait for the projection (see Retry-After)"),
    "503": _err("A dependency or the projection is not ready in time"),
}


def _path_param(name: str, pattern: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": f"^(?:{pattern})$"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _timeout(wait_timeout_ms_max: int) -> dict[str, Any]:
    return _query("timeout_ms", {"type": "integer", "minimum": 1, "maximum": wait_timeout_ms_max},
                  "How long to wait (default 5000)")


def _read_params(wait_timeout_ms_max: int) -> list[dict[str, Any]]:
    return [_query("min_position", {"type": "string"}, "Answer only once the projection has applied this position: "
                   "an opaque token this tenant was given (422 for any other string)"),
            _timeout(wait_timeout_ms_max)]


TENANT = _path_param("tenant", TENANT_RE.pattern)
ADDRESS = _path_param("address", ADDRESS_RE.pattern)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(summary: str, responses: dict[str, Any], params: list[dict[str, Any]] | None = None,
               body: dict[str, Any] | None = None, secure: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if not secure:
        op["security"] = []
    return op


def paths(wait_timeout_ms_max: int) -> dict[str, Any]:
    """Every route, with the bounds the code enforces (the largest `timeout_ms` is a setting)."""
    read_params = _read_params(wait_timeout_ms_max)
    page_params = [_query("limit", {"type": "integer", "minimum": 1, "maximum": ENTRIES_LIMIT_MAX},
                          f"Page size (default {ENTRIES_LIMIT_DEFAULT})"),
                   _query("cursor", {"type": "string"}, "next_cursor of the previous page")]
    plain = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "/healthz": {"get": _operation("Liveness", {"200": plain}, secure=False)},
        "/readyz": {"get": _operation("Readiness: database, Kafka, notifications",
                                      {"200": plain, "503": plain}, secure=False)},
        "/metrics": {"get": _operation("Prometheus metrics", {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            secure=False)},
        "/openapi.json": {"get": _operation("This document", {"200": plain}, secure=False)},
        "/v1/tenants": {"post": _operation(
            "Create a tenant (admin): appended to the log, answered once decided",
            {"201": plain, "202": _ok("Appended, not decided within timeout_ms", _ref("Pending")),
             "409": _err("The tenant exists"), **COMMON_ERRORS},
            [_timeout(wait_timeout_ms_max)],
            body={"type": "object", "required": ["id"], "additionalProperties": False, "properties": {
                "id": {"type": "string", "pattern": f"^(?:{TENANT_RE.pattern})$"},
                "name": {"type": "string", "minLength": 1, "maxLength": TENANT_NAME_LEN_MAX}}})},
        "/v1/tenants/{tenant}/keys": {"post": _operation(
            "Create an API key for the tenant (admin); the key is shown once",
            {"201": _ok("The new key", {"type": "object", "required": ["id", "key", "scopes"], "properties": {
                "id": {"type": "string"}, "key": {"type": "string"},
                "scopes": {"type": "array", "items": {"enum": ["read", "write"]}}}}), **COMMON_ERRORS},
            [TENANT], body={"type": "object", "required": ["scopes"], "properties": {
                "scopes": {"type": "array", "minItems": 1, "items": {"enum": ["read", "write"]}}}})},
        "/v1/tenants/{tenant}/keys/{key_id}": {"delete": _operation(
            "Revoke a key (admin)", {"204": {"description": "Revoked"}, **COMMON_ERRORS},
            [TENANT, _path_param("key_id", KEY_ID_RE.pattern)])},
        "/v1/tenants/{tenant}/transactions": {"get": _operation(
            "Transactions newest first, by filter (and metadata.KEY=VALUE parameters), in keyset pages",
            {"200": _ok("A page of transactions", {**CLOSED, "properties": {
                "transactions": {"type": "array", "items": _ref("Transaction")},
                "next_cursor": {"type": ["string", "null"]}}}), **COMMON_ERRORS},
            [TENANT, _query("account", {"type": "string", "pattern": f"^(?:{ADDRESS_RE.pattern})$"},
                            "Transactions that moved money on this account"),
             _query("reference", {"type": "string", "minLength": 1, "maxLength": 255}, "This reference"),
             _query("status", {"enum": ["committed", "rejected"]}, "This status"),
             _query("since", {"type": "string", "format": "date-time"}, "Created at or after"),
             _query("until", {"type": "string", "format": "date-time"}, "Created at or before"),
             *page_params, *read_params]),
            "post": _operation(
            "Append a transaction request to the log",
            {"200": _ok("A replay of an already decided Idempotency-Key", _ref("Transaction")),
             "201": _ok("Committed (wait=true)", _ref("Transaction")),
             "202": _ok("Appended, not yet decided", _ref("Pending")),
             "409": _err("Rejected by the ledger; the error code is the reason"),
             "413": _err("Body over 1 MiB"), **COMMON_ERRORS},
            [TENANT,
             {"name": "Idempotency-Key", "in": "header", "required": False,
              "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
             _query("wait", {"type": "boolean"}, "Wait for the decision"),
             _timeout(wait_timeout_ms_max)],
            body=_ref("TransactionRequest"))},
        "/v1/tenants/{tenant}/accounts": {"get": _operation(
            "Accounts by address prefix, with balances, held, available and policy (keyset pages by address); "
            "or, with `address` (1 to 100, repeated), those accounts in the order asked, all read at one position "
            "of the log (a snapshot read, not paged)",
            {"200": _ok("A page of accounts, or a snapshot", {**CLOSED, "properties": {
                "accounts": {"type": "array", "items": _ref("Account")}, "next_cursor": {"type": ["string", "null"]},
                "position": {"type": ["string", "null"],
                             "description": "Snapshot reads: the position every balance is as of"}}}),
             **COMMON_ERRORS},
            [TENANT, _query("prefix", {"type": "string", "pattern": "^[A-Za-z0-9_:.@-]{0,128}$"}, "Address prefix"),
             {"name": "address", "in": "query", "required": False, "style": "form", "explode": True,
              "description": "A snapshot read of these accounts (1 to 100; not with prefix, limit or cursor)",
              "schema": {"type": "array", "minItems": 1, "maxItems": 100,
                         "items": {"type": "string", "pattern": f"^(?:{ADDRESS_RE.pattern})$"}}},
             *page_params, *read_params])},
        "/v1/tenants/{tenant}/balances": {"get": _operation(
            "Sums per asset over the accounts whose address starts with the prefix (reads the matching rows)",
            {"200": _ok("Sums", {**CLOSED, "properties": {"prefix": {"type": "string"}, "balances": {
                "type": "object", "additionalProperties": {"type": "integer"}}, "accounts": {"type": "integer"}}}),
             **COMMON_ERRORS,
             "422": _err("A bad parameter, or sum_out_of_range: an asset's sum leaves int64 (ask a narrower prefix)")},
            [TENANT, _query("prefix", {"type": "string", "pattern": "^[A-Za-z0-9_:.@-]{0,128}$"}, "Address prefix"),
             *read_params])},
        "/v1/tenants/{tenant}/transactions/batch": {"post": _operation(
            "Append up to 1,000 transfers in order (atomic: one record, all committed or all rejected)",
            {"200": _ok("Every decision (wait=true), or a replay of the batch's Idempotency-Key (header "
                        "Idempotent-Replayed: the original transactions)", {**CLOSED, "properties": {
                            "transactions": {"type": "array", "items": _ref("Transaction")}}}),
             "202": _ok("Appended, not yet decided", {**CLOSED, "properties": {
                 "transactions": {"type": "array", "items": _ref("Pending")}}}),
             "409": _err("idempotency_conflict: the Idempotency-Key was used with another body"),
             "413": _err("Body over 1 MiB"), **COMMON_ERRORS},
            [TENANT, {"name": "Idempotency-Key", "in": "header", "required": False,
                      "description": "Binds the whole batch: one record, whose repeat replays every transaction",
                      "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
             _query("wait", {"type": "boolean"}, "Wait for every decision"), _timeout(wait_timeout_ms_max)],
            body=_ref("BatchRequest"))},
        "/v1/tenants/{tenant}/holds": {"post": _money("Place a hold: reserve the postings on their sources",
                                                      "Held (wait=true)", "Hold", [TENANT], _ref("HoldRequest"),
                                                      wait_timeout_ms_max)},
        "/v1/tenants/{tenant}/holds/{id}": {"get": _operation(
            "A hold and its state", {"200": _ok("The hold", _ref("Hold")), **COMMON_ERRORS},
            [TENANT, _path_param("id", ID_RE.pattern), *read_params])},
        "/v1/tenants/{tenant}/holds/{id}/capture": {"post": _money(
            "Capture a hold (all, or `amount` of a one-posting hold; the rest is released)",
            "Captured: the transaction that moved the money (wait=true)", "Transaction",
            [TENANT, _path_param("id", ID_RE.pattern)], _ref("Amount"), wait_timeout_ms_max, optional=True)},
        "/v1/tenants/{tenant}/holds/{id}/void": {"post": _money(
            "Void a hold: release what it reserved", "Voided: the hold (wait=true)", "Hold",
            [TENANT, _path_param("id", ID_RE.pattern)], _ref("VoidRequest"), wait_timeout_ms_max, optional=True)},
        "/v1/tenants/{tenant}/transactions/{id}/reverse": {"post": _money(
            "Reverse a transaction (all, or `amount` of a one-posting transaction)",
            "Reversed: the new transaction (wait=true)", "Transaction", [TENANT, _path_param("id", ID_RE.pattern)],
            _ref("Amount"), wait_timeout_ms_max, optional=True)},
        "/v1/tenants/{tenant}/transactions/{id}": {"get": _operation(
            "A transaction and its outcome", {"200": _ok("The transaction", _ref("Transaction")), **COMMON_ERRORS},
            [TENANT, _path_param("id", ID_RE.pattern), *read_params])},
        "/v1/tenants/{tenant}/accounts/{address}": {
            "get": _operation(
                "An account's balances and policy (one round trip)", {"200": _ok("Balances", _ref("Account")),
                                                                      **COMMON_ERRORS},
                [TENANT, ADDRESS, _query("at", {"type": "string", "format": "date-time"}, "Balances as of this time"),
                 *read_params]),
            "put": _money("Replace the account's policy: metadata, per-asset overdraft limits, frozen",
                          "Set: the account (wait=true)", "Account", [TENANT, ADDRESS], _ref("PolicyRequest"),
                          wait_timeout_ms_max, optional=True)},
        "/v1/tenants/{tenant}/accounts/{address}/entries": {"get": _operation(
            "An account's history, newest first (keyset pages); with `Accept: text/csv`, every entry of the "
            "filters as CSV (transaction_id,asset,amount,balance_after,committed_at), streamed, no page limit",
            {"200": {"description": "A page of entries, or the CSV export",
                     "content": {"application/json": {"schema": _ref("Entries")},
                                 "text/csv": {"schema": {"type": "string"}}}}, **COMMON_ERRORS},
            [TENANT, ADDRESS, _query("asset", {"type": "string"}, "Only this asset"),
             _query("limit", {"type": "integer", "minimum": 1, "maximum": ENTRIES_LIMIT_MAX},
                    f"Page size (default {ENTRIES_LIMIT_DEFAULT}; not with CSV)"),
             _query("cursor", {"type": "string"}, "next_cursor of the previous page (not with CSV)"), *read_params])},
        "/v1/tenants/{tenant}/accounts/{address}/statement": {"get": _operation(
            "A statement of a period (`until` exclusive; default the first entry to now): opening + credits - "
            "debits = closing, in a constant number of indexed lookups",
            {"200": _ok("The statement", {**CLOSED, "properties": {
                "address": {"type": "string"}, "asset": {"type": "string"},
                "from": {"type": "string", "format": "date-time"}, "until": {"type": "string", "format": "date-time"},
                "opening": {"type": "integer"}, "closing": {"type": "integer"},
                "debits": {"type": ["integer", "string"]}, "credits": {"type": ["integer", "string"]},
                "count": {"type": "integer"}}}), **COMMON_ERRORS},
            [TENANT, ADDRESS, {**_query("asset", {"type": "string"}, "The asset (required)"), "required": True},
             _query("from", {"type": "string", "format": "date-time"}, "From (inclusive)"),
             _query("until", {"type": "string", "format": "date-time"}, "Until (exclusive)"), *read_params])},
        "/v1/tenants/{tenant}/chain": {"get": _operation(
            "The tenant's tamper-evident chain: how many committed movements it links, and the last one's hash",
            {"200": _ok("The chain", {**CLOSED, "properties": {
                "count": {"type": "integer"}, "head": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "position": {"type": ["string", "null"]}}}), **COMMON_ERRORS}, [TENANT, *read_params])},
        "/v1/tenants/{tenant}/webhooks": {
            "post": _operation(
                "Register an endpoint for events (its secret is shown once); 422 url_not_allowed for a URL that is "
                "or resolves to a loopback, private, link-local or unspecified address",
                {"201": _ok("The endpoint, with its secret", _ref("Webhook")), **COMMON_ERRORS}, [TENANT],
                body={"type": "object", "additionalProperties": False, "required": ["url", "events"],
                      "properties": {"url": {"type": "string", "minLength": 1, "maxLength": 2048},
                                     "events": {"type": "array", "minItems": 1, "uniqueItems": True,
                                                "items": {"enum": [*EVENT_TYPES, ANY]}}}}),
            "get": _operation("The tenant's endpoints", {"200": _ok("Endpoints", {
                "type": "object", "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}}}),
                **COMMON_ERRORS}, [TENANT])},
        "/v1/tenants/{tenant}/webhooks/{id}": {
            "get": _operation("An endpoint", {"200": _ok("The endpoint", _ref("Webhook")), **COMMON_ERRORS},
                              [TENANT, _path_param("id", ID_RE.pattern)]),
            "delete": _operation("Delete an endpoint; what it still had to receive is cancelled",
                                 {"200": _ok("The endpoint, deleted", _ref("Webhook")), **COMMON_ERRORS},
                                 [TENANT, _path_param("id", ID_RE.pattern)])},
        "/v1/tenants/{tenant}/webhooks/{id}/deliveries": {"get": _operation(
            "An endpoint's delivery attempts, newest first",
            {"200": _ok("A page of attempts", {**CLOSED, "properties": {
                "deliveries": {"type": "array", "items": {**CLOSED, "properties": {
                    "event_id": {"type": "string"}, "type": {"type": "string"},
                    "status_code": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
                    "attempt": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}}}},
                "next_cursor": {"type": ["string", "null"]}}}), **COMMON_ERRORS},
            [TENANT, _path_param("id", ID_RE.pattern),
             _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size (default 100)"),
             _query("cursor", {"type": "string"}, "next_cursor of the previous page")])},
        "/v1/tenants/{tenant}/monitors": {
            "post": _money("Watch an account's posted balance: balance.crossed fires when a committed transaction "
                           "moves it from >= below to < below, or from <= above to > above (a log record)",
                           "Created: the monitor (wait=true)", "Monitor", [TENANT], _ref("MonitorRequest"),
                           wait_timeout_ms_max),
            "get": _operation("The tenant's monitors by id (active ones; removed=true: all)", {"200": _ok(
                "A page of monitors", {**CLOSED, "properties": {
                    "monitors": {"type": "array", "items": _ref("Monitor")},
                    "next_cursor": {"type": ["string", "null"]}}}), **COMMON_ERRORS},
                [TENANT, *page_params, _query("removed", {"type": "boolean"}, "Include removed monitors"),
                 *read_params])},
        "/v1/tenants/{tenant}/monitors/{id}": {
            "get": _operation("A monitor", {"200": _ok("The monitor", _ref("Monitor")), **COMMON_ERRORS},
                              [TENANT, _path_param("id", ID_RE.pattern), *read_params]),
            "delete": _money("Remove a monitor (a log record)", "Removed: the monitor (wait=true)", "Monitor",
                             [TENANT, _path_param("id", ID_RE.pattern)], _ref("VoidRequest"), wait_timeout_ms_max,
                             optional=True)},
        "/v1/tenants/{tenant}/limits": {
            "get": _operation("A tenant's limits in force (admin)", {"200": _ok("The limits", _ref("Limits")),
                                                                     **COMMON_ERRORS}, [TENANT]),
            "put": _operation("Set any of a tenant's limits, the others kept (admin); in force on every API "
                              "process within 1 s", {"200": _ok("The limits", _ref("Limits")), **COMMON_ERRORS},
                              [TENANT], body={**CLOSED, "properties": {
                                  "writes_per_s": {"type": "integer", "minimum": 1},
                                  "reads_per_s": {"type": "integer", "minimum": 1},
                                  "burst_s": {"type": "integer", "minimum": 1, "maximum": 3600}}})},
    }


def _money(summary: str, decided: str, shown: str, params: list[dict[str, Any]], body: dict[str, Any],
           wait_timeout_ms_max: int, optional: bool = False) -> dict[str, Any]:
    """A request appended to the log, answered like a transfer: 202, 201, 409 (404: its target is unknown)."""
    op = _operation(summary, {
        "200": _ok("A replay of an already decided Idempotency-Key (a rejected original answers as it did: 409, "
                   "or 404)", _ref(shown)),
        "201": _ok(decided, _ref(shown)), "202": _ok("Appended, not yet decided", _ref("Pending")),
        "409": _err("Rejected by the ledger; the error code is the reason"), **COMMON_ERRORS},
        [*params, {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
         _query("wait", {"type": "boolean"}, "Wait for the decision"), _timeout(wait_timeout_ms_max)], body=body)
    if optional:
        op["requestBody"]["required"] = False
    return op
