"""The `ledger` command line on the running stack: status, tenants and keys, verify, and a replay that
switches the live projection while it is being read and written."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import asyncpg
import httpx

from tests.conftest import Tenant
from tests.e2e.helpers import balances, outcomes_reader, posting, refused_within, transfer
from tests.stack import Stack, opened, unique


def ledger(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], env=stack.env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_status_reports_every_partition_and_the_group(stack: Stack) -> None:
    run = ledger(stack, "status", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert len(report["partitions"]) == 4
    assert all(p["log_end"] >= p["projected"] >= 0 for p in report["partitions"])
    assert len(report["members"]) >= 1
    assert "partition" in ledger(stack, "status").stdout


async def test_status_shows_the_limits_in_force(stack: Stack, admin: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await admin.put(tenant.path("/limits"), json={"writes_per_s": 7})).status_code == 200
    report = json.loads(ledger(stack, "status", "--json").stdout)["limits"]
    assert report["defaults"] == {"writes_per_s": 1000, "reads_per_s": 5000, "burst_s": 2}
    assert {"tenant": tenant.id, "writes_per_s": 7, "reads_per_s": 5000, "burst_s": 2} in report["custom"]
    assert report["api_processes"] >= 1
    assert f"{tenant.id}: 7 writes/s" in ledger(stack, "status").stdout


async def test_tenants_and_keys_from_the_command_line(stack: Stack) -> None:
    tenant = unique("cli")
    assert ledger(stack, "tenants", "create", tenant, "--name", "CLI").returncode == 0
    created = ledger(stack, "keys", "create", tenant, "--scopes", "read")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split("key id:")[1].split()[0]
    key = next(line.split()[-1] for line in created.stdout.splitlines() if line.startswith("key:"))
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(20):
            if (await client.get(f"/v1/tenants/{tenant}/accounts/a")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await client.get(f"/v1/tenants/{tenant}/accounts/a")).status_code == 200
        assert ledger(stack, "keys", "revoke", tenant, key_id).returncode == 0
        assert (await refused_within(client, f"/v1/tenants/{tenant}/accounts/a", 1.0)).status_code == 401
    bad = ledger(stack, "keys", "create", unique("nobody"))
    assert bad.returncode == 2 and "no tenant" in bad.stderr


async def test_replay_switches_the_live_projection_without_failing_a_read(
    stack: Stack, tenant: Tenant, db: asyncpg.Pool
) -> None:
    # Enough for every transfer the load below makes, so each 202 must end as exactly one unit at bob.
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 10**9))).status_code == 201
    before = await db.fetchval("SELECT active_schema FROM ledger_meta")
    stop = asyncio.Event()
    statuses: list[int] = []
    written = 0

    async def read_and_write() -> None:
        nonlocal written
        while not stop.is_set():
            statuses.append((await tenant.client.get(tenant.path("/accounts/alice"))).status_code)
            response = await transfer(tenant.client, tenant.id, posting("alice", "bob", 1), wait=False)
            statuses.append(response.status_code)
            written += response.status_code == 202

    load = asyncio.create_task(read_and_write())
    run = await asyncio.to_thread(ledger, stack, "replay", "--no-progress")
    stop.set()
    await load
    assert run.returncode == 0, run.stdout + run.stderr
    assert "switched" in run.stdout
    after = await db.fetchval("SELECT active_schema FROM ledger_meta")
    assert after != before
    assert statuses and set(statuses) <= {200, 202}, sorted(set(statuses))
    last = await transfer(tenant.client, tenant.id, posting("@world", "carol", 1))
    assert last.status_code == 201
    assert await balances(tenant.client, tenant.id, "bob", min_position=last.json()["position"]) == {"USD/2": written}
    verified = ledger(stack, "verify")
    assert verified.returncode == 0, verified.stdout
    assert "identical" in verified.stdout


def test_replay_until_a_position_leaves_a_shadow_that_a_second_run_finishes(stack: Stack) -> None:
    status = json.loads(ledger(stack, "status", "--json").stdout)
    first = status["partitions"][0]
    token = f"{first['partition']}-{max(0, first['log_end'] // 2)}"
    partial = ledger(stack, "replay", "--until", token, "--no-progress")
    assert partial.returncode == 0, partial.stderr
    assert "left as a shadow" in partial.stdout
    finished = ledger(stack, "replay", "--no-progress")
    assert finished.returncode == 0, finished.stderr
    assert "switched" in finished.stdout
    assert ledger(stack, "verify").returncode == 0


async def test_a_replay_while_the_projector_lags_leaves_every_record_an_outcome(stack: Stack, tenant: Tenant) -> None:
    # Records the live projector has not applied yet stay its own to decide: a replay that applied them to its
    # shadow and switched would leave them decided with no outcome published (the projector resumes past them).
    seen: set[str] = set()
    consumer, reader = await outcomes_reader(seen)
    try:
        stack.kill_projector(signal.SIGTERM)
        try:
            sent = [await transfer(tenant.client, tenant.id, posting("@world", "lag", 1), wait=False)
                    for _ in range(20)]
            assert all(r.status_code == 202 for r in sent), [r.text for r in sent]
            run = await asyncio.to_thread(ledger, stack, "replay", "--no-progress")
            assert run.returncode == 0, run.stdout + run.stderr
        finally:
            stack.ensure_projector()
        records = {opened(tenant.id, r.json()["position"]).raw() for r in sent}
        deadline = time.monotonic() + 30
        while not records <= seen and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert records <= seen, f"{len(records - seen)} of {len(records)} records never got an outcome"
        last = await transfer(tenant.client, tenant.id, posting("@world", "lag", 1))
        assert await balances(tenant.client, tenant.id, "lag", min_position=last.json()["position"]) == {"USD/2": 21}
    finally:
        reader.cancel()
        await consumer.stop()
