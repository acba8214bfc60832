"""Every route of the contract, its status codes and bodies, and its errors in the JSON shape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import Tenant, create_tenant
from tests.e2e.helpers import posting, refused_within, transfer
from tests.stack import Stack, unique


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) >= {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code


async def test_transaction_shape_with_metadata_and_reference(tenant: Tenant) -> None:
    created = await transfer(tenant.client, tenant.id, posting("@world", "alice", 9), key="m1",
                             metadata={"order": "42"}, reference="inv-42")
    assert created.status_code == 201, created.text
    got = await tenant.client.get(tenant.path(f"/transactions/{created.json()['id']}"))
    body = got.json()
    assert body["metadata"] == {"order": "42"} and body["reference"] == "inv-42"
    assert body["postings"] == [posting("@world", "alice", 9)]
    assert {"id", "status", "postings", "metadata", "reference", "position", "created_at", "committed_at"} <= set(body)
    assert "reason" not in body


async def test_unknown_transaction_is_404_and_a_bad_id_422(tenant: Tenant) -> None:
    assert_error(await tenant.client.get(tenant.path("/transactions/nope")), 404, "not_found")
    assert_error(await tenant.client.get(tenant.path("/transactions/bad%20id")), 422)


async def test_post_without_wait_is_pending_then_readable_at_its_position(tenant: Tenant) -> None:
    response = await transfer(tenant.client, tenant.id, posting("@world", "alice", 3), wait=False)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    got = await tenant.client.get(tenant.path(f"/transactions/{body['id']}"), params={"min_position": body["position"]})
    assert got.status_code == 200 and got.json()["status"] == "committed"


async def test_unknown_account_has_no_balances(tenant: Tenant) -> None:
    body = (await tenant.client.get(tenant.path("/accounts/nobody"))).json()
    assert body == {"address": "nobody", "balances": {}, "held": {}, "available": {}, "position": None,
                    "metadata": {}, "overdraft_limit": {}, "frozen": False, "version": 0}


async def test_entries_are_newest_first_signed_and_paged(tenant: Tenant) -> None:
    for amount in (10, 20, 30):
        assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", amount))).status_code == 201
    assert (await transfer(tenant.client, tenant.id, posting("alice", "bob", 5), posting("@world", "alice", 1, "EUR/2"))
            ).status_code == 201
    page = (await tenant.client.get(tenant.path("/accounts/alice/entries"), params={"limit": 2})).json()
    assert [(e["asset"], e["amount"], e["balance_after"]) for e in page["entries"]] == [("EUR/2", 1, 1),
                                                                                        ("USD/2", -5, 55)]
    rest = (await tenant.client.get(tenant.path("/accounts/alice/entries"),
                                    params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [(e["amount"], e["balance_after"]) for e in rest["entries"]] == [(30, 60), (20, 30)]
    last = (await tenant.client.get(tenant.path("/accounts/alice/entries"),
                                    params={"limit": 2, "cursor": rest["next_cursor"]})).json()
    assert [(e["amount"], e["balance_after"]) for e in last["entries"]] == [(10, 10)]
    assert last["next_cursor"] is None
    usd = (await tenant.client.get(tenant.path("/accounts/alice/entries"), params={"asset": "USD/2"})).json()
    assert [e["amount"] for e in usd["entries"]] == [-5, 30, 20, 10]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"cursor": "!!"},
                                    {"cursor": "bm90LWEtY3Vyc29y"}, {"asset": "usd"}])
async def test_entries_reject_bad_parameters(tenant: Tenant, params: dict[str, str]) -> None:
    assert_error(await tenant.client.get(tenant.path("/accounts/alice/entries"), params=params), 422)


async def test_balances_at_a_time(tenant: Tenant) -> None:
    first = await transfer(tenant.client, tenant.id, posting("@world", "alice", 100))
    await asyncio.sleep(0.05)
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 5))).status_code == 201
    at = first.json()["committed_at"]
    body = (await tenant.client.get(tenant.path("/accounts/alice"), params={"at": at})).json()
    assert body["balances"] == {"USD/2": 100}
    before = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert (await tenant.client.get(tenant.path("/accounts/alice"), params={"at": before})).json()["balances"] == {}
    assert_error(await tenant.client.get(tenant.path("/accounts/alice"), params={"at": "yesterday"}), 422)
    assert_error(await tenant.client.get(tenant.path("/accounts/alice"), params={"at": "2026-01-01T00:00:00"}), 422)


async def test_min_position_beyond_the_log_is_422_at_once(tenant: Tenant) -> None:
    # v2: a position the log has not reached is refused at once (the 503 after timeout_ms, for a position in
    # the log not yet applied, is tested with a paused projector in test_limits.py).
    response = await tenant.client.get(tenant.path("/accounts/alice"),
                                       params={"min_position": "0-999999999999", "timeout_ms": "200"})
    assert_error(response, 422, "invalid_request")
    assert_error(await tenant.client.get(tenant.path("/accounts/alice"), params={"min_position": "zz"}), 422)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 422),
        (b'{"postings": "x"}', 422),
        (b'{"postings": [{"source": "@world", "destination": "a", "amount": 1.5, "asset": "USD/2"}]}', 422),
        (b'{"postings": [{"source": "@world", "destination": "a", "amount": 0, "asset": "USD/2"}]}', 422),
        (b'{"postings": [{"source": "a", "destination": "a", "amount": 1, "asset": "USD/2"}]}', 422),
        (b'{"postings": [{"source": "a\\u0000", "destination": "b", "amount": 1, "asset": "USD/2"}]}', 422),
        (b'{"postings": [{"source": "@world", "destination": "a", "amount": 1, "asset": "USD/2"}], "x": 1}', 422),
    ],
)
async def test_bad_bodies_are_refused_with_json_errors(tenant: Tenant, body: bytes, status: int) -> None:
    response = await tenant.client.post(tenant.path("/transactions"), content=body)
    assert_error(response, status)


async def test_oversized_body_is_413(tenant: Tenant) -> None:
    response = await tenant.client.post(tenant.path("/transactions"), content=b" " * (1024 * 1024 + 1))
    assert_error(response, 413, "payload_too_large")


async def test_oversized_idempotency_key_is_422(tenant: Tenant) -> None:
    response = await transfer(tenant.client, tenant.id, posting("@world", "a", 1), key="k" * 256)
    assert_error(response, 422)


async def test_auth_is_required_and_scoped(admin: httpx.AsyncClient, stack: Stack, tenant: Tenant) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        assert_error(await anonymous.get(tenant.path("/accounts/a")), 401, "unauthorized")
        assert_error(await anonymous.get(tenant.path("/accounts/a"), headers={"Authorization": "Bearer lk_x_y"}), 401)
    other = await create_tenant(admin, stack)
    try:
        assert_error(await other.client.get(tenant.path("/accounts/a")), 403, "forbidden")
        assert_error(await other.client.post("/v1/tenants", json={"id": unique()}), 403)
    finally:
        await other.client.aclose()
    reader = await create_tenant(admin, stack, scopes=("read",))
    try:
        assert_error(await transfer(reader.client, reader.id, posting("@world", "a", 1)), 403)
        assert (await reader.client.get(reader.path("/accounts/a"))).status_code == 200
    finally:
        await reader.client.aclose()


async def test_revoked_key_is_refused_within_a_second(admin: httpx.AsyncClient, stack: Stack) -> None:
    victim = await create_tenant(admin, stack)
    try:
        assert (await victim.client.get(victim.path("/accounts/a"))).status_code == 200
        key_id = victim.key.split("_")[1]
        assert (await admin.delete(f"/v1/tenants/{victim.id}/keys/{key_id}")).status_code == 204
        assert_error(await refused_within(victim.client, victim.path("/accounts/a"), 1.0), 401)
        assert_error(await admin.delete(f"/v1/tenants/{victim.id}/keys/unknown"), 404)
    finally:
        await victim.client.aclose()


async def test_tenant_registry(admin: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_error(await admin.post("/v1/tenants", json={"id": tenant.id}), 409, "already_exists")
    assert_error(await admin.post("/v1/tenants", json={"id": "Not Valid"}), 422)
    assert_error(await admin.post(f"/v1/tenants/{unique()}/keys", json={"scopes": ["read"]}), 404)
    assert_error(await admin.post(f"/v1/tenants/{tenant.id}/keys", json={"scopes": ["root"]}), 422)
    assert_error(await tenant.client.get(f"/v1/tenants/{unique()}/accounts/a"), 403)
    assert_error(await admin.get(f"/v1/tenants/{unique()}/accounts/a"), 404)


async def test_unknown_routes_and_methods(tenant: Tenant) -> None:
    assert_error(await tenant.client.get("/v2/nothing"), 404, "not_found")
    assert_error(await tenant.client.delete(tenant.path("/accounts/a")), 405, "method_not_allowed")


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_balances_at_beyond_what_a_timestamp_holds_is_422(tenant: Tenant, at: str) -> None:
    assert_error(await tenant.client.get(tenant.path("/accounts/alice"), params={"at": at}), 422, "invalid_request")


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00-14:00"])
async def test_balances_at_the_edges_of_the_range_answer(tenant: Tenant, at: str) -> None:
    response = await tenant.client.get(tenant.path("/accounts/alice"), params={"at": at})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("key_id", ["%00", "a%00b", "0123456789abcdef%00", "ABCDEF0123456789", "x" * 300])
async def test_revoking_a_malformed_key_id_is_404_never_500(admin: httpx.AsyncClient, tenant: Tenant,
                                                            key_id: str) -> None:
    assert_error(await admin.delete(tenant.path(f"/keys/{key_id}")), 404, "not_found")


async def test_service_routes(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and all(ready["checks"].values())
        metrics = (await client.get("/metrics")).text
        assert "ledger_api_requests_total" in metrics
        doc = (await client.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.") and "/v1/tenants/{tenant}/accounts/{address}" in doc["paths"]


async def test_balance_reads_answer_alike_on_the_fast_path_and_through_the_router(tenant: Tenant) -> None:
    # A read without query parameters is served by api.hot; any parameter sends it through Starlette.
    created = await transfer(tenant.client, tenant.id, posting("@world", "hot-path", 5))
    position = created.json()["position"]
    fast = await tenant.client.get(tenant.path("/accounts/hot-path"), headers={"X-Request-Id": "hot-1"})
    routed = await tenant.client.get(tenant.path("/accounts/hot-path"), params={"min_position": position},
                                     headers={"X-Request-Id": "hot-2"})
    assert fast.status_code == routed.status_code == 200
    assert fast.json() == routed.json() == {"address": "hot-path", "balances": {"USD/2": 5}, "held": {"USD/2": 0},
                                            "available": {"USD/2": 5}, "position": position, "metadata": {},
                                            "overdraft_limit": {}, "frozen": False, "version": 1}
    assert (fast.headers["x-request-id"], routed.headers["x-request-id"]) == ("hot-1", "hot-2")
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    for params in ({}, {"timeout_ms": "100"}):
        assert_error(await tenant.client.get(tenant.path("/accounts/bad%20address"), params=params), 422)
        assert_error(await tenant.client.get(tenant.path("/accounts/a"), params=params,
                                             headers={"Authorization": "Bearer nope"}), 401, "unauthorized")


async def test_fast_path_reads_are_counted_under_their_route(stack: Stack, tenant: Tenant) -> None:
    assert (await tenant.client.get(tenant.path("/accounts/counted"))).status_code == 200
    async with httpx.AsyncClient(base_url=stack.api_url) as client:
        metrics = (await client.get("/metrics")).text
    assert 'ledger_api_requests_total{method="GET",route="/v1/tenants/{tenant}/accounts/{address}",status="200"}' \
        in metrics
