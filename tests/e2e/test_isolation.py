"""Tenant isolation over HTTP and hostile input on every route."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import httpx
import pytest

from tests.conftest import Tenant, create_tenant
from tests.e2e.helpers import posting, transfer
from tests.stack import Stack, opened

TENANT_ROUTES = [
    ("POST", "/transactions", {"postings": [posting("@world", "a", 1)]}),
    ("GET", "/transactions/x1", None),
    ("GET", "/accounts/a", None),
    ("GET", "/accounts/a/entries", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), TENANT_ROUTES)
async def test_a_key_of_tenant_a_is_refused_on_tenant_b(admin: httpx.AsyncClient, stack: Stack, tenant: Tenant,
                                                        method: str, suffix: str, body: object) -> None:
    other = await create_tenant(admin, stack)
    try:
        response = await other.client.request(method, tenant.path(suffix), json=body)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
    finally:
        await other.client.aclose()


async def test_a_position_token_is_refused_for_any_other_tenant(admin: httpx.AsyncClient, stack: Stack,
                                                              tenant: Tenant) -> None:
    other = await create_tenant(admin, stack)
    try:
        written = await transfer(other.client, other.id, posting("@world", "a", 1))
        theirs = written.json()["position"]
        # Theirs as it is, their position in the clear as tokens used to show it, and a token cut short.
        for candidate in (theirs, opened(other.id, theirs).raw(), theirs[:-1]):
            response = await tenant.client.get(tenant.path("/accounts/a"), params={"min_position": candidate})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_request"
        mine = await other.client.get(other.path("/accounts/a"), params={"min_position": theirs})
        assert (mine.status_code, mine.json()["position"]) == (200, theirs)
    finally:
        await other.client.aclose()


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/tenants"), ("POST", "/v1/tenants/{t}/keys"),
                                              ("DELETE", "/v1/tenants/{t}/keys/k")])
async def test_tenant_keys_cannot_use_admin_routes(tenant: Tenant, method: str, path: str) -> None:
    response = await tenant.client.request(method, path.format(t=tenant.id), json={"id": "x", "scopes": ["read"]})
    assert response.status_code == 403


async def test_a_write_only_key_cannot_read(admin: httpx.AsyncClient, stack: Stack) -> None:
    writer = await create_tenant(admin, stack, scopes=("write",))
    try:
        assert (await transfer(writer.client, writer.id, posting("@world", "a", 1))).status_code == 201
        assert (await writer.client.get(writer.path("/accounts/a"))).status_code == 403
    finally:
        await writer.client.aclose()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/accounts/a%00b", 422),
        ("/accounts/%D0%B0lice", 422),  # Cyrillic a
        ("/accounts/a'%20OR%20'1'='1", 422),
        ("/accounts/" + "x" * 129, 422),
        ("/transactions/x%00", 422),
        ("/transactions/%E2%80%AEabc", 422),
        ("/accounts/a/entries?cursor=%00", 422),
        ("/accounts/a?at=2026-13-45T99:99:99Z", 422),
        ("/accounts/a?min_position=-1-5", 422),
        # Decoded, the slashes leave the account route: no route matches.
        ("/accounts/..%2F..%2Fetc%2Fpasswd", 404),
    ],
)
async def test_hostile_paths_are_4xx_never_500(tenant: Tenant, path: str, status: int) -> None:
    response = await tenant.client.get(tenant.path(path))
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert "Traceback" not in response.text


@pytest.mark.parametrize("tenant_id", ["ACME", "a%00", "%D0%B0cme", "a'--", "-a", "a" * 64])
async def test_hostile_tenant_ids_are_422(admin: httpx.AsyncClient, tenant_id: str) -> None:
    response = await admin.get(f"/v1/tenants/{tenant_id}/accounts/a")
    assert response.status_code == 422, response.text


async def test_many_tenants_through_a_small_pool_never_see_each_other(admin: httpx.AsyncClient, stack: Stack) -> None:
    tenants = [await create_tenant(admin, stack) for _ in range(12)]
    try:
        amounts = {t.id: 1000 + i for i, t in enumerate(tenants)}
        for t in tenants:
            assert (await transfer(t.client, t.id, posting("@world", "shared-name", amounts[t.id]))).status_code == 201

        async def read(t: Tenant) -> tuple[str, dict[str, int]]:
            body = (await t.client.get(t.path("/accounts/shared-name"))).json()
            return t.id, body["balances"]

        results = await asyncio.gather(*(read(t) for t in tenants for _ in range(40)))
        assert len(results) == 480
        assert all(balances == {"USD/2": amounts[tid]} for tid, balances in results)
    finally:
        for t in tenants:
            await t.client.aclose()


def test_schemathesis_finds_no_server_error_or_schema_break(stack: Stack) -> None:
    """Property-based fuzzing of every operation in /openapi.json (admin token, so every route is reached)."""
    checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{stack.api_url}/openapi.json",
         "-H", f"Authorization: Bearer {stack.admin_token}", "--checks", checks, "--max-examples", "40",
         "--phases", "coverage,fuzzing", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    print(f"\nschemathesis: {summary.group(0) if summary else run.stdout[-2000:]}")
    assert run.returncode == 0, run.stdout[-5000:]
    assert summary is not None and int(summary.group(1)) == int(summary.group(2)) > 100
