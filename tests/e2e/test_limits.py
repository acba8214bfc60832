"""Nothing stops the API: waiters are bounded per tenant and key and give their places back, a position
beyond the log is refused at once, an exhausted pool answers 503 at once, a stuck notification connection is
detected and replaced, and `/readyz` says when no projector consumes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import httpx

from ledger.positions import Position
from ops import registry
from tests.conftest import Tenant, create_tenant
from tests.e2e.helpers import posting, transfer
from tests.stack import Stack, opened, token, unique

CONDITION_TIMEOUT_S = 15.0


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = CONDITION_TIMEOUT_S) -> float:
    """Poll `condition` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP a process (the tests run as root, so a PostgreSQL backend too), and always SIGCONT it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def backend_pid(application_name: str) -> int:
    """The PostgreSQL backend serving a connection of this session's database with that name (as the owner,
    who sees every backend's name)."""
    conn = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    try:
        pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                                "AND datname = current_database()", application_name)
    finally:
        await conn.close()
    assert len(pids) == 1, f"{len(pids)} backends named {application_name!r}"
    return int(pids[0]["pid"])


async def waiters(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    match = re.search(r"^ledger_api_waiters (\S+)$", text, re.MULTILINE)
    assert match is not None, "no ledger_api_waiters gauge"
    return float(match[1])


@contextlib.asynccontextmanager
async def as_tenant(url: str, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.key}"}) as client:
        yield client


async def test_a_position_beyond_the_log_is_refused_at_once(tenant: Tenant) -> None:
    written = await transfer(tenant.client, tenant.id, posting("@world", "a", 1), wait=False)
    at = opened(tenant.id, written.json()["position"])
    for beyond in (Position(at.partition, at.offset + 1_000_000), Position(0, 999999999999), Position(999, 0)):
        started = time.monotonic()
        response = await tenant.client.get(tenant.path("/accounts/a"),
                                           params={"min_position": token(tenant.id, beyond), "timeout_ms": "20000"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_request"
        assert str(beyond.offset) not in response.text, "the answer shows the offset the token hides"
        assert time.monotonic() - started < 5, "refused only after waiting"
    reached = await tenant.client.get(tenant.path("/accounts/a"), params={"min_position": written.json()["position"]})
    assert reached.status_code == 200, reached.text


async def test_one_tenants_flood_of_waiters_is_429_for_it_and_never_for_another(stack: Stack, tenant: Tenant,
                                                                               admin: httpx.AsyncClient) -> None:
    other = await create_tenant(admin, stack)
    try:
        await _flood(stack, tenant, other)
    finally:
        await other.client.aclose()


async def _flood(stack: Stack, tenant: Tenant, other: Tenant) -> None:
    limits = {"LEDGER_WAITERS_MAX": "10", "LEDGER_WAITERS_TENANT_MAX": "2", "LEDGER_WAITERS_KEY_MAX": "2"}
    assert stack.projector is not None
    with stack.extra_api(**limits) as (url, _):
        async with as_tenant(url, tenant) as mine, as_tenant(url, other) as theirs:
            with stopped(stack.projector.pid):  # positions appended now stay unapplied until SIGCONT
                pa = (await transfer(tenant.client, tenant.id, posting("@world", "a", 1), wait=False)).json()
                pb = (await transfer(other.client, other.id, posting("@world", "b", 1), wait=False)).json()

                def read(client: httpx.AsyncClient, t: Tenant, position: str,
                         timeout_ms: int) -> Awaitable[httpx.Response]:
                    return client.get(t.path("/accounts/a"), params={"min_position": position,
                                                                     "timeout_ms": str(timeout_ms)})

                # Many more timeouts, one after the other, than the global bound of 10: each gives its place back.
                for _ in range(30):
                    timed_out = await read(mine, tenant, pa["position"], 1)
                    assert timed_out.status_code == 503, timed_out.text
                parked = [asyncio.create_task(read(mine, tenant, pa["position"], 20000)) for _ in range(2)]
                await until(lambda: _equals(waiters(mine), 2), "two waiters parked")
                refused = await read(mine, tenant, pa["position"], 20000)
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "too_many_waiting"
                assert refused.headers["retry-after"] == "1"
                other_waits = asyncio.create_task(read(theirs, other, pb["position"], 20000))
                await until(lambda: _equals(waiters(mine), 3), "the other tenant's waiter parked")
            answered = await asyncio.gather(*parked, other_waits)
            assert [r.status_code for r in answered] == [200, 200, 200], [r.text for r in answered]


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


async def test_an_exhausted_pool_answers_503_at_once(stack: Stack, tenant: Tenant) -> None:
    settings = {"LEDGER_DB_POOL_SIZE_MAX": "1", "LEDGER_DB_ACQUIRE_TIMEOUT_MS": "200"}
    with stack.extra_api(**settings) as (url, proc):
        pid = await backend_pid(f"ledger-api:{proc.pid}")
        async with as_tenant(url, tenant) as client:

            async def timed_read() -> tuple[float, httpx.Response]:
                started = time.monotonic()
                response = await client.get(tenant.path("/accounts/a"))
                return time.monotonic() - started, response

            with stopped(pid):  # the pool's one connection hangs in its query: the pool is exhausted
                results = sorted(await asyncio.gather(timed_read(), timed_read()), key=lambda r: r[0])
            fastest_s, fastest = results[0]
            assert fastest.status_code == 503, fastest.text
            assert fastest.json()["error"]["code"] == "unavailable"
            assert fastest_s < 1.0, f"waited {fastest_s:.2f} s for a connection"


async def test_a_stuck_listener_connection_turns_readyz_not_ready_and_is_replaced(stack: Stack, tenant: Tenant,
                                                                                  admin: httpx.AsyncClient) -> None:
    assert stack.api is not None
    pid = await backend_pid(f"ledger-api-listener:{stack.api.pid}")
    key = (await admin.post(tenant.path("/keys"), json={"scopes": ["read"]})).json()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as plain, \
            httpx.AsyncClient(base_url=stack.api_url, timeout=10,
                              headers={"Authorization": f"Bearer {key['key']}"}) as reader:
        problems: dict[str, str] = {}

        async def not_ready() -> bool:
            body = (await plain.get("/readyz")).json()
            problems.update(body.get("problems", {}))
            return not body["checks"]["notifications"]

        async def ready() -> bool:
            return (await plain.get("/readyz")).status_code == 200

        with stopped(pid):
            took_s = await until(not_ready, "/readyz reports the notifications check false")
        assert took_s < 5, took_s
        assert problems.get("notifications"), problems
        await until(ready, "/readyz ready again after SIGCONT")
        assert (await reader.get(tenant.path("/accounts/a"))).status_code == 200
        # Key changes flow again: a key revoked by an operator (straight in the database, with its NOTIFY,
        # not through this API) is refused.
        await registry.revoke_key(os.environ["LEDGER_DATABASE_URL"], tenant.id, key["id"])

        async def refused() -> bool:
            return (await reader.get(tenant.path("/accounts/a"))).status_code == 401

        await until(refused, "the revoked key is refused", timeout_s=5)
        # Progress flows again: wait=true is woken by the projector's NOTIFY.
        committed = await tenant.client.post(tenant.path("/transactions"), params={"wait": "true"},
                                             json={"postings": [posting("@world", "a", 1)]})
        assert committed.status_code == 201, committed.text


async def test_readyz_says_when_no_projector_consumes(stack: Stack) -> None:
    with stack.extra_api(LEDGER_PROJECTOR_GROUP=unique("nobody")) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            body: dict[str, object] = {}

            async def reported() -> bool:
                body.update((await client.get("/readyz")).json())
                return "projector" in body.get("problems", {})  # type: ignore[operator]

            await until(reported, "/readyz reports the projector problem")
            assert body["status"] == "not_ready" and body["checks"]["projector"] is False  # type: ignore[index]
            assert "no projector is consuming" in body["problems"]["projector"]  # type: ignore[index]
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        assert (await client.get("/readyz")).json()["checks"]["projector"] is True
