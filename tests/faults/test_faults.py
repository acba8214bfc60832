"""Faults survived under a stream of writes, against the real services: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ops.status import group_members
from tests.conftest import Tenant
from tests.faults.helpers import assert_verified, needs_local_services, stream, wait_projected
from tests.stack import Stack, unique
from tools import local, processes

PARTITIONS = 4
SHUTDOWN_S_MAX = 10.0


def tenants_on_every_partition() -> tuple[list[str], list[str]]:
    """Two tenants on each partition (as the default partitioner places them): the ones verified, and
    others writing beside them, so a verification of some tenants must pass over the rest of the log."""
    partitioner = DefaultPartitioner()
    chosen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    while any(len(found) < 2 for found in chosen.values()):
        tenant = unique("fault")
        found = chosen[partitioner(tenant.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))]
        if len(found) < 2:
            found.append(tenant)
    return [found[0] for found in chosen.values()], [found[1] for found in chosen.values()]


async def applied(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("SELECT coalesce(sum(next_offset), 0) FROM api_offsets()"))


async def until_applied(db: asyncpg.Pool, records: int, timeout_s: float = 60) -> None:
    """Until the projection has applied `records` more records than now."""
    target = await applied(db) + records
    deadline = time.monotonic() + timeout_s
    while await applied(db) < target:
        assert time.monotonic() < deadline, f"the projection did not apply {records} records in {timeout_s} s"
        await asyncio.sleep(0.05)


async def kill_mid_batch(stack: Stack, db: asyncpg.Pool, timeout_s: float = 30) -> None:
    """SIGKILL the projector while a batch's write transaction is open: it is caught with SIGSTOP while
    PostgreSQL shows its writing backend inside a transaction that wrote (an xid), and killed only if that
    transaction is still open once the process is frozen."""
    assert stack.projector is not None
    writing = ("SELECT count(*) FROM pg_stat_activity WHERE usename = 'ledger_projector'"
               " AND datname = current_database() AND backend_xid IS NOT NULL")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await db.fetchval(writing):
            stack.projector.send_signal(signal.SIGSTOP)
            if await db.fetchval(writing):
                stack.kill_projector(signal.SIGKILL)
                return
            stack.projector.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.001)
    raise AssertionError("never caught the projector inside a batch's write")


async def test_projector_killed_mid_batch_restarts_and_verifies(
    stack: Stack, producer: AIOKafkaProducer, db: asyncpg.Pool
) -> None:
    tenants, others = tenants_on_every_partition()
    stop = asyncio.Event()
    writer = asyncio.create_task(stream(producer, tenants + others, stop, rate_per_s=800))
    await until_applied(db, 500)
    await kill_mid_batch(stack, db)
    stack.start_projector()
    await until_applied(db, 500)
    stop.set()
    sent = await writer
    await wait_projected(db, sent)
    await assert_verified(tenants)


async def test_two_projectors_share_the_group_and_the_survivor_resumes(
    stack: Stack, producer: AIOKafkaProducer, db: asyncpg.Pool
) -> None:
    group = stack.env["LEDGER_PROJECTOR_GROUP"]
    bootstrap = stack.env["LEDGER_KAFKA_BOOTSTRAP"]
    survivor = stack.extra_projector()
    for _ in range(300):
        if len(await group_members(bootstrap, group)) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(await group_members(bootstrap, group)) == 2
    tenants, others = tenants_on_every_partition()
    stop = asyncio.Event()
    writer = asyncio.create_task(stream(producer, tenants + others, stop, rate_per_s=400))
    await until_applied(db, 400)
    before = {r["log_partition"]: r["next_offset"] for r in await db.fetch("SELECT * FROM api_offsets()")}
    stack.kill_projector(signal.SIGKILL)
    killed_at = time.monotonic()
    resumed_s = None
    while time.monotonic() - killed_at < 90:
        now = {r["log_partition"]: r["next_offset"] for r in await db.fetch("SELECT * FROM api_offsets()")}
        if all(now.get(p, 0) > before.get(p, 0) + 50 for p in range(PARTITIONS)):
            resumed_s = time.monotonic() - killed_at
            break
        await asyncio.sleep(0.1)
    stop.set()
    sent = await writer
    print(f"\nsurvivor resumed every partition {resumed_s:.1f} s after the kill" if resumed_s else "")
    assert resumed_s is not None, "the survivor never took over the killed projector's partitions"
    assert survivor.poll() is None
    await wait_projected(db, sent)
    await assert_verified(tenants)
    # Back to one projector, as the other tests expect.
    stack.start_projector()
    processes.stop(survivor, "survivor")


@needs_local_services
async def test_kafka_down_gives_prompt_503s_and_loses_nothing_acknowledged(
    stack: Stack, tenant: Tenant, db: asyncpg.Pool
) -> None:
    acknowledged: list[str] = []
    unconfirmed: list[str] = []
    refused: list[float] = []

    async def post() -> None:
        started = time.monotonic()
        response = await tenant.client.post(tenant.path("/transactions"), json={
            "postings": [{"source": "@world", "destination": "acct", "amount": 1, "asset": "USD/2"}]})
        if response.status_code == 202:
            acknowledged.append(response.json()["id"])
        else:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] in ("unavailable", "append_unconfirmed")
            unconfirmed.extend([response.json()["id"]] if "id" in response.json() else [])
            refused.append(time.monotonic() - started)

    for _ in range(20):
        await post()
    local.stop_kafka()
    try:
        await asyncio.gather(*(post() for _ in range(10)))
        assert refused and max(refused) < 5.0, refused
    finally:
        local.start_kafka(configured_elsewhere=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = len(acknowledged)
        await post()
        if len(acknowledged) > before:
            break
        await asyncio.sleep(0.5)
    for _ in range(20):
        await post()
    await stack.caught_up(timeout_s=120, restart=True)
    stored = {r["id"] for r in await db.fetch("SELECT id FROM transactions WHERE tenant = $1", tenant.id)}
    # Every acknowledged request is there; a refused one may be too (the producer retried it), never another.
    assert set(acknowledged) <= stored <= set(acknowledged) | set(unconfirmed)
    balance = await db.fetchval("SELECT balance FROM balances WHERE tenant = $1 AND account = 'acct'", tenant.id)
    assert balance == len(stored)
    await assert_verified([tenant.id])


@needs_local_services
async def test_postgres_restart_fails_reads_fast_and_everything_reconnects(
    stack: Stack, tenant: Tenant, producer: AIOKafkaProducer, db: asyncpg.Pool
) -> None:
    assert (await tenant.client.get(tenant.path("/accounts/acct"))).status_code == 200
    stop = asyncio.Event()
    writer = asyncio.create_task(stream(producer, [tenant.id], stop, rate_per_s=200))
    await until_applied(db, 100)
    local.stop_postgres()
    try:
        started = time.monotonic()
        response = await tenant.client.get(tenant.path("/accounts/acct"))
        assert response.status_code == 503, response.text
        assert time.monotonic() - started < 3.0
        await asyncio.sleep(2.0)  # the outage itself: writes go on, the projector retries
        # The projector is retrying against the database that is down: a stop still takes effect promptly.
        started = time.monotonic()
        stack.kill_projector(signal.SIGTERM)
        assert time.monotonic() - started < SHUTDOWN_S_MAX
    finally:
        local.start_postgres(configured_elsewhere=False)
    stop.set()
    sent = await writer
    await db.expire_connections()
    stack.ensure_projector()
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        status = (await tenant.client.get(tenant.path("/accounts/acct"))).status_code
        if status == 200:
            break
        await asyncio.sleep(0.2)
    assert status == 200
    await wait_projected(db, sent)
    waited = await tenant.client.post(tenant.path("/transactions"), params={"wait": "true"}, json={
        "postings": [{"source": "@world", "destination": "other", "amount": 1, "asset": "USD/2"}]})
    assert waited.status_code == 201, waited.text
    await assert_verified([tenant.id])


async def test_sigterm_finishes_in_flight_requests_and_exits_promptly(stack: Stack, tenant: Tenant) -> None:
    port = 8019
    env = {**stack.env, "LEDGER_API_PORT": str(port)}
    api = processes.spawn("api", env, stack.logs / "api-shutdown.log")
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=tenant.client.headers) as client:
            for _ in range(100):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            body = {"postings": [{"source": "@world", "destination": "acct", "amount": 1, "asset": "USD/2"}]}
            in_flight = [asyncio.create_task(client.post(tenant.path("/transactions"), params={"wait": "true"},
                                                         json=body)) for _ in range(20)]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            api.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*in_flight, return_exceptions=True)
            await asyncio.to_thread(api.wait, SHUTDOWN_S_MAX)
            assert time.monotonic() - started < SHUTDOWN_S_MAX
        answered = [r for r in responses if isinstance(r, httpx.Response)]
        assert answered and all(r.status_code in (201, 202) for r in answered), responses
        # Requests the server had not yet accepted may be refused at the socket; none may get a 5xx.
        assert all(isinstance(r, httpx.Response | httpx.TransportError) for r in responses)
    finally:
        processes.stop(api, "API")
    started = time.monotonic()
    stack.kill_projector(signal.SIGTERM)
    assert time.monotonic() - started < SHUTDOWN_S_MAX
    assert stack.projector is not None and stack.projector.returncode == 0
    stack.start_projector()


@pytest.fixture(autouse=True)
def _projector_running(stack: Stack) -> None:
    stack.ensure_projector()
    assert isinstance(stack.projector, subprocess.Popen)
