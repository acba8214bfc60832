"""`make bench` / `make bench-quick`: the stack as `make run` starts it, measured end to end.

Prints a table, saves JSON and a PNG plot under `bench/results/`. Uses its own database (`ledger_bench`)
and consumer group; the scale data is generated inside PostgreSQL, not appended to the log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.errors import KafkaError

from api.inputs import encode_cursor
from bench import ceiling, data, fairness, isolation, postmortem, queries, tools, waited, webhooks
from client import LedgerProducer
from infra import local, processes
from infra import settings as settings_mod
from infra.kafka import log_end
from infra.local import DATA, ROOT, say
from infra.migrate import migrate
from infra.run import wait_ready
from infra.testing import remove_world, session_env
from ledger.placement import partition_for
from ledger.positions import PositionKey
from ledger.requests import Posting
from projections.replay import replay

RESULTS = ROOT / "bench" / "results"
DEEP = 150_000
PRODUCE_CONCURRENCY_MAX = 2000


class Bench:
    def __init__(self, quick: bool, only: set[str] | None = None) -> None:
        self.quick = quick
        self.only = only
        self.duration_s = 5 if quick else 10
        self.results: dict[str, Any] = {"quick": quick, "machine": _machine()}
        # Its own database, topics and group, removed afterwards: a run never reads an earlier one's log.
        self.env = session_env(settings_mod.load(), f"bench-{secrets.token_hex(4)}", local_services=False)
        self.env["LEDGER_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
        self.env["LEDGER_WEBHOOK_ALLOW_HOSTS"] = "localhost"  # the webhooks step's receiver is on this machine
        self.cfg = settings_mod.load(self.env)
        self.db_url = self.cfg.database_url
        self.bootstrap = self.cfg.kafka_bootstrap
        self.topic = self.cfg.transactions_topic
        self.url = f"http://127.0.0.1:{self.cfg.api_port}"
        self.logs = DATA / "logs" / "bench"
        self.projectors: list[Any] = []
        self.api: Any = None
        self.dispatcher: Any = None
        self.keys: dict[str, str] = {}

    # --- the stack -------------------------------------------------------------------------------------

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        processes.prepare(self.env)
        self.spawn_projectors()
        self.dispatcher = processes.spawn("dispatch", self.env, self.logs / "dispatcher.log")
        self.spawn_api()

    def spawn_api(self, **env: str) -> None:
        self.api = processes.spawn("api", self.env | env, self.logs / "api.log")
        wait_ready(self.url, self.api)

    def stop(self) -> None:
        for proc, name in ((self.api, "API"), (self.dispatcher, "dispatcher"),
                           *((p, "projector") for p in self.projectors)):
            if proc is not None:
                processes.stop(proc, name)

    def spawn_projectors(self, count: int | None = None, **env: str) -> None:
        """As many projector processes as `make run` starts (LEDGER_PROJECTORS) or `count`, one group."""
        self.projectors = [processes.spawn("projections.app", self.env | env, self.logs / f"projector-{n}.log")
                           for n in range(1, (count or self.cfg.projectors) + 1)]

    def stop_projectors(self) -> None:
        for proc in self.projectors:
            processes.stop(proc, "projector")

    def restart(self, which: tuple[str, ...], **env: str) -> None:
        """Restart the API and/or the projectors (`which`) with `env` added; without, as configured."""
        if "projector" in which:
            self.stop_projectors()
            self.spawn_projectors(None, **env)
        if "api" in which:
            processes.stop(self.api, "API")
            self.spawn_api(**env)

    async def tenants(self) -> None:
        admin = {"Authorization": f"Bearer {self.env['LEDGER_ADMIN_TOKEN']}"}
        async with httpx.AsyncClient(base_url=self.url, headers=admin) as client:
            for tenant in data.TENANTS:
                created = await client.post("/v1/tenants", json={"id": tenant})
                assert created.status_code in (201, 409), created.text
                key = await client.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]})
                self.keys[tenant] = key.json()["key"]

    async def caught_up(self, conn: asyncpg.Connection, timeout_s: float = 600) -> float:
        """Wait until the projection has applied the whole log; returns when it got there."""
        end = await log_end(self.bootstrap, self.topic)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            applied = {r["log_partition"]: r["next_offset"] for r in await conn.fetch(
                "SELECT log_partition, next_offset FROM projection_offsets")}
            if all(applied.get(p, 0) >= offset for p, offset in end.items()):
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise TimeoutError("the projector did not catch up with the log")

    # --- measurements ----------------------------------------------------------------------------------

    def _targets(self, accounts: int, count: int = 20_000, suffix: str = "") -> str:
        rng = random.Random(1)
        lines = []
        for _ in range(count):
            i = rng.randint(1, accounts)
            tenant = f"bench-{i % 10:02d}"
            lines.append(f"GET {self.url}/v1/tenants/{tenant}/accounts/acct-{i}{suffix}\n"
                         f"Authorization: Bearer {self.keys[tenant]}\n")
        return "\n".join(lines) + "\n"

    def _lua_targets(self, accounts: int) -> Path:
        rng = random.Random(2)
        rows = []
        for _ in range(5000):
            i = rng.randint(1, accounts)
            tenant = f"bench-{i % 10:02d}"
            rows.append(f'{{"/v1/tenants/{tenant}/accounts/acct-{i}", "{self.keys[tenant]}"}}')
        path = self.logs / "targets.lua"
        path.write_text("return {\n" + ",\n".join(rows) + "\n}\n")
        return path

    def reads(self, accounts: int, label: str, rates: list[int]) -> None:
        targets = self._targets(accounts)
        tools.attack(targets, 200, 2)  # warm every pooled connection's prepared statements
        rows = []
        for rate in rates:
            row = tools.attack(targets, rate, self.duration_s)
            row["accounts"] = accounts
            rows.append(row)
            say(f"{label} @ {rate}/s: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, errors {row['errors']}")
        self.results[label] = rows

    def saturation(self, accounts: int) -> None:
        script = str(ROOT / "bench" / "balance.lua")
        env = {"LEDGER_BENCH_TARGETS": str(self._lua_targets(accounts))}
        balance = tools.saturate(self.url, self.duration_s, script=script, env=env)
        static = tools.saturate(f"{self.url}/healthz", self.duration_s)
        ratio = balance["rps"] / static["rps"]
        cache = _cache_counts(self.url)
        self.results["saturation"] = {"balance": balance, "static": static, "ratio": round(ratio, 3),
                                      "api_workers": self.cfg.api_workers, "cache": cache}
        say(f"saturation: balance {balance['rps']:.0f} req/s vs static {static['rps']:.0f} req/s = {ratio:.2f}x "
            f"(target 0.5x); balance cache since start: {cache}")

    async def round_trips(self, owner: asyncpg.Connection, accounts: int) -> None:
        targets = self._targets(accounts)
        tools.attack(targets, 200, 2)
        await owner.execute("SELECT pg_stat_statements_reset()")
        row = tools.attack(targets, 500, 4)
        calls = await owner.fetch(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
            "WHERE r.rolname = 'ledger_api' ORDER BY calls DESC")
        total = sum(r["calls"] for r in calls)
        self.results["round_trips"] = {
            "requests": row["requests"], "statements": total,
            "per_request": round(total / row["requests"], 3),
            "top": [(r["query"][:80], r["calls"]) for r in calls[:3]],
        }
        say(f"round trips per balance read: {total} statements / {row['requests']} requests")

    def history(self) -> None:
        tenant = "bench-00"
        key = self.keys[tenant]
        base = f"{self.url}/v1/tenants/{tenant}/accounts/{data.DEEP_ACCOUNT}/entries?limit=50"
        # Cursors are sealed for their tenant with the API's key, which this run's environment holds.
        positions = PositionKey(settings_mod.require_position_key(self.cfg, "make bench"))
        deep_cursor = encode_cursor(positions, tenant, DEEP - 100_000 + 1, 1)
        rows = {}
        for label, url in (("depth_0", base), ("depth_100000", f"{base}&cursor={deep_cursor}")):
            rows[label] = tools.attack(f"GET {url}\nAuthorization: Bearer {key}\n", 500, self.duration_s)
            say(f"history {label} @ 500/s: p50 {rows[label]['p50_ms']:.2f} ms, p99 {rows[label]['p99_ms']:.2f} ms")
        self.results["history"] = rows

    async def ingest_direct(self, owner: asyncpg.Connection, count: int, mix: bool = False,
                            processes_count: int | None = None, pure: bool = False) -> None:
        """Stop the projector, append `count` requests with the producer client, restart the projector (with
        `processes_count` processes, else as configured) and time the catch-up alone. Transfers of two postings;
        with `mix`, half of them holds of two postings and half captures of those holds. With `pure`, the
        projector runs `ledger/` as Python rather than as mypyc built it."""
        n = processes_count or self.cfg.projectors
        self.stop_projectors()
        run = secrets.token_hex(3)
        async with LedgerProducer(self.bootstrap, follow_outcomes=False, topic=self.topic) as ledger:
            for first in range(0, count, PRODUCE_CONCURRENCY_MAX):
                last = min(count, first + PRODUCE_CONCURRENCY_MAX)
                if not mix:
                    await asyncio.gather(*[ledger.submit(data.TENANTS[n % 10], _transfer(n))
                                           for n in range(first, last)])
                    continue
                # Holds first, then their captures: each lands after its hold on the tenant's partition.
                await asyncio.gather(*[ledger.hold(data.TENANTS[n % 10], _held(n), id=f"h{run}-{n}")
                                       for n in range(first, last, 2)])
                await asyncio.gather(*[ledger.capture(data.TENANTS[(n - 1) % 10], f"h{run}-{n - 1}")
                                       for n in range(first + 1, last, 2)])
        before = await owner.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets")
        await owner.execute("SELECT pg_stat_statements_reset()")
        since = await ceiling.applied(owner)
        wal_before = await ceiling.wal_bytes(owner)
        lsn_before = await ceiling.wal_lsn(owner)
        self.spawn_projectors(n, **({"LEDGER_PURE": "1"} if pure else {}))
        profile = _profile(self.projectors[0].pid, "mix" if mix else "ingest")
        while await owner.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets") == before:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        meter = tools.CpuMeter().start()
        first = await owner.fetchval("SELECT coalesce(sum(next_offset), 0)::bigint FROM projection_offsets")
        finished = await self.caught_up(owner)
        cpu = meter.stop()
        wal = await ceiling.wal_bytes(owner) - wal_before
        if profile is not None:
            profile.send_signal(signal.SIGINT)
            profile.wait()
        applied = before + count - first
        rate = applied / (finished - started)
        label = "ingest_mix" if mix else "ingest_direct" if processes_count is None else f"ingest_direct_{n}"
        label += "_pure" if pure else ""
        self.results[label] = {"transactions": count, "measured": applied,
                               "seconds": round(finished - started, 2), "tx_per_s": round(rate),
                               "wal_bytes_per_tx": round(wal / count), "projectors": n, "compiled": not pure,
                               "cpu": cpu}
        if mix:
            if "ingest_direct" in self.results:
                self.results[label]["ratio_to_transfers"] = round(rate / self.results["ingest_direct"]["tx_per_s"], 2)
            decided = await owner.fetch("SELECT kind, status, count(*) AS n FROM transactions"
                                        " WHERE kind IN ('hold', 'capture') GROUP BY 1, 2 ORDER BY 1, 2")
            self.results[label]["decided"] = {f"{r['kind']} {r['status']}": r["n"] for r in decided}
        say(f"{label} (straight to Kafka, {n} projector process(es)): {rate:.0f} decided requests/s "
            f"over {applied}, "
            f"{wal / count:.0f} WAL bytes per request; {tools.cpu_text(cpu)}")
        statements = await owner.fetch(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
            "WHERE r.rolname = 'ledger_projector' ORDER BY total_exec_time DESC LIMIT 12")
        self.results[label]["projector_statements"] = [
            {"query": " ".join(r["query"].split())[:90], "calls": r["calls"], "ms": round(r["total_exec_time"])}
            for r in statements]
        for r in self.results[label]["projector_statements"][:8]:
            say(f"  SQL {r['ms']:>6} ms {r['calls']:>6} calls  {r['query']}")
        if processes_count is not None:
            if "ceiling" in self.results:
                self.results[label]["ratio"] = round(rate / self.results["ceiling"]["tx_per_s"], 2)
                say(f"  {n} projector processes reach {self.results[label]['ratio']}x the ceiling measured above")
            self.stop_projectors()
            self.spawn_projectors()
        elif not mix:
            self.results[label]["wal_by_record"] = await ceiling.wal_by_record(owner, lsn_before, count)
            for row in self.results[label]["wal_by_record"]:
                say(f"  WAL {row['kind']}: {row['per_tx']} per tx, {row['bytes_per_tx']} bytes/tx "
                    f"({row['fpi_bytes_per_tx']} of them full pages)")
            top = await ceiling.measure(owner, since)
            top["ratio"] = round(rate / top["tx_per_s"], 2)
            self.results["ceiling"] = top
            say(f"PostgreSQL's ceiling for the same rows: {top['tx_per_s']} tx/s ({top['wal_bytes_per_tx']} WAL "
                f"bytes/tx; {tools.cpu_text(top['cpu'])}); the projector reaches {top['ratio']}x")

    async def _tenant(self, tenant: str) -> str:
        """A tenant created through the API (on the log) and a read/write key for it."""
        admin = {"Authorization": f"Bearer {self.env['LEDGER_ADMIN_TOKEN']}"}
        async with httpx.AsyncClient(base_url=self.url, headers=admin, timeout=30) as client:
            created = await client.post("/v1/tenants", json={"id": tenant})
            assert created.status_code in (201, 409), created.text
            key = await client.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]})
        return str(key.json()["key"])

    async def queries(self, owner: asyncpg.Connection) -> None:
        """Each query shape on a small and a large tenant, same run: a page should cost the same at both."""
        large_tx, large_accounts = (100_000, 10_000) if self.quick else (1_000_000, 100_000)
        sizes = {"q-small": (10_000, 1_000), "q-large": (large_tx, large_accounts)}
        results: dict[str, Any] = {}
        for tenant, (transactions, accounts) in sizes.items():
            key = await self._tenant(tenant)
            say(f"loading {transactions} transactions over {accounts} accounts for {tenant}")
            await queries.load(owner, tenant, transactions, accounts)
            results[tenant] = {"transactions": transactions, "accounts": accounts, "key": key}
        for table in ("transactions", "entries", "balances"):
            await owner.execute(f"VACUUM (ANALYZE) {table}")
        for tenant, info in results.items():
            info["timings"] = queries.measure(self.url, tenant, info.pop("key"), info["transactions"], 100,
                                              2 if self.quick else 4)
            for name, row in info["timings"].items():
                say(f"query {name} on {tenant}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                    f"errors {row['errors']}")
        self.results["queries"] = results

    async def batches_vs_singles(self) -> None:
        """Closed loop for a few seconds: transfers committed per second posting one at a time (16 clients)
        against posting batches of 100 (4 clients), both with wait=true, same run."""
        key = await self._tenant("bench-batches")
        headers = {"Authorization": f"Bearer {key}"}
        seconds = 3 if self.quick else 6
        funded = {"postings": [{"source": "@world", "destination": "payer", "amount": 10**15, "asset": "USD/2"}]}
        one = {"postings": [{"source": "payer", "destination": "payee", "amount": 1, "asset": "USD/2"}]}
        results = {}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30) as client:
            await client.post("/v1/tenants/bench-batches/transactions?wait=true", json=funded)
            for label, clients, size in (("single", 16, 1), ("batch_100", 4, 100)):
                committed = 0
                deadline = time.monotonic() + seconds

                async def worker(deadline: float = deadline, size: int = size) -> None:
                    nonlocal committed
                    while time.monotonic() < deadline:
                        if size == 1:
                            r = await client.post("/v1/tenants/bench-batches/transactions?wait=true", json=one)
                            committed += r.status_code == 201
                        else:
                            r = await client.post("/v1/tenants/bench-batches/transactions/batch?wait=true",
                                                  json={"transactions": [one] * size})
                            committed += sum(t["status"] == "committed" for t in r.json()["transactions"])

                started = time.monotonic()
                await asyncio.gather(*(worker() for _ in range(clients)))
                results[label] = round(committed / (time.monotonic() - started))
        results["ratio"] = round(results["batch_100"] / results["single"], 1)
        self.results["batches"] = results
        say(f"committed transfers/s: single posts {results['single']}, batches of 100 {results['batch_100']} "
            f"({results['ratio']}x)")

    async def hold_everything(self, owner: asyncpg.Connection, accounts: int) -> None:
        """An open hold (of 1) on every account the reads look at, for reads of accounts with holds."""
        async with LedgerProducer(self.bootstrap, follow_outcomes=False, topic=self.topic) as ledger:
            for first in range(1, accounts + 1, PRODUCE_CONCURRENCY_MAX):
                await asyncio.gather(*[
                    ledger.hold(data.TENANTS[i % 10], [Posting(f"acct-{i}", "@holds", 1, "USD/2")],
                                expires_in_s=86_400)
                    for i in range(first, min(accounts + 1, first + PRODUCE_CONCURRENCY_MAX))])
        await self.caught_up(owner)
        held = await owner.fetchval("SELECT count(*) FROM balances WHERE held > 0 AND account LIKE 'acct-%'")
        say(f"{held} accounts with an open hold")

    async def ingest_client(self, rate: int) -> None:
        """Open loop through the producer client: `rate` requests/s, each timed from its scheduled send to
        its outcome read back from `ledger.outcomes` (append + projector commit + outcome delivery)."""
        count = rate * self.duration_s
        latencies: list[float] = []
        errors = 0
        async with LedgerProducer(self.bootstrap, topic=self.topic, outcomes_topic=self.cfg.outcomes_topic) as ledger:
            started = time.perf_counter() + 0.1

            async def one(n: int) -> None:
                nonlocal errors
                scheduled = started + n / rate
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                try:
                    outcome = await ledger.outcome(await ledger.submit(data.TENANTS[n % 10], _transfer(n)), 30)
                    if outcome["status"] != "committed":
                        errors += 1
                except (KafkaError, TimeoutError):
                    errors += 1
                latencies.append((time.perf_counter() - scheduled) * 1000)

            await asyncio.gather(*[one(n) for n in range(count)])
        latencies.sort()
        row = {"rate": rate, "requests": count, "errors": errors, "achieved_rps": round(count / self.duration_s, 1),
               "p50_ms": latencies[len(latencies) // 2], "p95_ms": latencies[int(len(latencies) * 0.95)],
               "p99_ms": latencies[int(len(latencies) * 0.99)], "max_ms": latencies[-1]}
        self.results.setdefault("ingest_client", []).append(row)
        say(f"producer client, append to outcome @ {rate}/s: p50 {row['p50_ms']:.2f} ms, "
            f"p99 {row['p99_ms']:.2f} ms, errors {errors}")

    def ingest_http(self, rate: int) -> None:
        bodies = self.logs / "bodies"
        bodies.mkdir(exist_ok=True)
        lines = []
        for n in range(50):
            tenant = data.TENANTS[n % 10]
            body = bodies / f"{n}.json"
            body.write_text(json.dumps({"postings": [
                {"source": "@world", "destination": f"http-{n}", "amount": 5, "asset": "USD/2"}]}))
            lines.append(f"POST {self.url}/v1/tenants/{tenant}/transactions?wait=true\n"
                         f"Authorization: Bearer {self.keys[tenant]}\nContent-Type: application/json\n@{body}\n")
        row = tools.attack("\n".join(lines), rate, self.duration_s)
        self.results.setdefault("ingest_http_wait", []).append(row)
        say(f"POST ?wait=true @ {rate}/s: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
            f"errors {row['errors']} {row['status_codes']}")

    async def replay_rate(self) -> None:
        url = self.db_url.rsplit("/", 1)[0] + f"/ledger_bench_replay_{secrets.token_hex(4)}"
        await migrate(url)
        try:
            started = time.monotonic()
            stats = await replay(lambda: asyncpg.connect(url), self.bootstrap, self.topic, "proj_v1")
            seconds = time.monotonic() - started
        finally:
            admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
            await admin.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}"')
            await admin.close()
        self.results["replay"] = {"events": stats.records, "seconds": round(seconds, 2),
                                  "events_per_s": round(stats.records / seconds)}
        say(f"replay: {stats.records} events in {seconds:.1f} s = {stats.records / seconds:.0f} events/s")

    async def postmortem(self, owner: asyncpg.Connection) -> None:
        """The seed's scenario at its scale (a tenth of it with --quick), its load at 1x, 5x and 10x."""
        wallets, transactions = (1_000, 10_000) if self.quick else (10_000, 100_000)
        keys = await postmortem.keys_for(self.url, self.env["LEDGER_ADMIN_TOKEN"])
        say(f"post-mortem scenario: appending {transactions:,} transactions over {wallets:,} wallets for each of "
            f"{len(keys)} tenants")
        appended_s = await postmortem.load(self.bootstrap, self.topic, wallets, transactions)
        started = time.monotonic()
        await self.caught_up(owner, timeout_s=1800)
        projected_s = time.monotonic() - started
        await owner.execute("VACUUM (ANALYZE) transactions")  # the steady state, not a bulk load's aftermath
        await data.settle(owner)
        say(f"appended in {appended_s:.0f} s, projected {projected_s:.0f} s after the last append")
        seconds = 5 if self.quick else 10
        levels = postmortem.measure(self.url, keys, wallets, self.logs / "bodies", seconds)
        levers = postmortem.levers(self, keys, wallets, self.logs / "bodies", seconds)
        self.results["postmortem"] = {"tenants": len(keys), "wallets_per_tenant": wallets,
                                      "transactions_per_tenant": transactions, "append_s": round(appended_s, 1),
                                      "caught_up_after_s": round(projected_s, 1), "levels": levels,
                                      "levers_at_10x": levers,
                                      "sla": postmortem.SLA, "seed_balance_read_ms": postmortem.SEED_READ_MS}

    async def reads_held(self, owner: asyncpg.Connection, accounts: int) -> None:
        await self.hold_everything(owner, accounts)
        self.reads(accounts, "reads_10k_held", [1000])

    def ingest_https(self, rates: list[int]) -> None:
        for rate in rates:
            self.ingest_http(rate)

    async def fairness(self) -> None:
        """A victim's waited writes alone and during another tenant's flood on the victim's own partition."""
        by_partition: dict[int, list[str]] = {}
        for tenant in data.TENANTS:
            by_partition.setdefault(partition_for(tenant.encode(), self.cfg.topic_partitions), []).append(tenant)
        neighbour, flood = next(ts for ts in by_partition.values() if len(ts) >= 2)[:2]
        victim = next(t for t in data.TENANTS if partition_for(t.encode(), self.cfg.topic_partitions)
                      != partition_for(flood.encode(), self.cfg.topic_partitions))
        # Fresh projectors: the loads before may have stalled one past its watchdog (it exits to be restarted).
        self.restart(("projector",))
        conn = await asyncpg.connect(self.db_url)
        try:
            await conn.execute("SELECT ledger_use_live()")
            result = await fairness.measure(self.url, self.env["LEDGER_ADMIN_TOKEN"], self.bootstrap, self.topic,
                                            (victim, self.keys[victim]), (neighbour, self.keys[neighbour]),
                                            (flood, self.keys[flood]),
                                            self.duration_s, self.logs, lambda: self.caught_up(conn))
            self.results["fairness"] = result
            await self.caught_up(conn)  # the floods' backlog is not the next step's
        finally:
            await conn.close()
        say(f"fairness: victim p99 alone {result['alone']['p99_ms']:.1f} ms; HTTP flood "
            f"{result['http_flood']['ratio_p99']}x; Kafka flood {result['kafka_flood']['ratio_p99']}x, with a quota "
            f"{result['kafka_flood_quota']['ratio_p99']}x")

    async def webhooks(self) -> None:
        """Events out: decision published to delivery acknowledged, at 500 transfers/s to a local receiver."""
        tenant = data.TENANTS[-1]
        results = await webhooks.measure(self.url, tenant, self.keys[tenant], self.duration_s, self.logs / "bodies")
        self.results["webhooks"] = results
        for result in results.values():
            say(f"webhooks at {result['rate']}/s: delivered {result['events_delivered']} of "
                f"{result['writes_accepted']} (duplicates {result['duplicates']}); p50 {result['p50_ms']} ms "
                f"({result['ratio_p50']}x a waited write's), p99 {result['p99_ms']} ms ({result['ratio_p99']}x); "
                f"dispatcher {result['dispatcher_cpu_us_per_event']} CPU-µs/event; {tools.cpu_text(result['cpu'])}")

    def waited(self) -> None:
        """What one waited write costs the stack, per process role (issue 24's first figure)."""
        tenant = data.TENANTS[0]
        self.results["waited"] = waited.measure(self.url, tenant, self.keys[tenant], self.duration_s, self.logs)
        say(waited.lines(self.results["waited"])[0])

    async def isolation(self) -> None:
        self.results["isolation"] = await isolation.measure(self.db_url)

    async def large(self, owner: asyncpg.Connection, small: int) -> None:
        large = 1_000_000
        say(f"loading up to {large} accounts x 10 entries")
        started = time.monotonic()
        await data.load_accounts(owner, small + 1, large, 10)
        await data.settle(owner)
        self.results["load_1m_seconds"] = round(time.monotonic() - started, 1)
        self.reads(large, "reads_1m", [1000])

    # --- the run ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        owner = await asyncpg.connect(self.db_url)
        await owner.execute("SELECT ledger_use_live()")  # loads and counts go to the live projection
        try:
            await self.tenants()
            await self.caught_up(owner)
            if self.only == {"fairness"}:  # needs none of the scale data
                await self.fairness()
                return
            if self.only == {"webhooks"}:
                await self.webhooks()
                return
            if self.only == {"waited"}:  # a fresh database: the cost of a write before any scale data
                self.waited()
                return
            small = 10_000
            say(f"loading {small} accounts x 10 entries and one history of {DEEP}")
            await data.load_accounts(owner, 1, small, 10)
            await data.load_deep_history(owner, DEEP)
            await data.settle(owner)
            rates = [500, 2000] if self.quick else [500, 1000, 2000, 5000]
            count = 20_000 if self.quick else 100_000
            steps: list[tuple[str, Callable[[], Awaitable[None] | None]]] = [
                ("reads", lambda: self.reads(small, "reads_10k", rates)),
                ("saturation", lambda: self.saturation(small)),
                ("round_trips", lambda: self.round_trips(owner, small)),
                ("history", self.history),
                ("ingest", lambda: self.ingest_direct(owner, count)),
                ("ingest2", lambda: self.ingest_direct(owner, count, processes_count=2)),
                ("pure", lambda: self.ingest_direct(owner, count, processes_count=1, pure=True)),
                ("mix", lambda: self.ingest_direct(owner, count, mix=True)),
                ("held", lambda: self.reads_held(owner, small)),
                ("client", lambda: self.ingest_client(500)),
                ("http", lambda: self.ingest_https([500] if self.quick else [100, 500])),
                ("waited", self.waited),
                ("replay", self.replay_rate),
                ("isolation", self.isolation),
                ("fairness", self.fairness),
                ("webhooks", self.webhooks),
                ("batches", self.batches_vs_singles),
                ("queries", lambda: self.queries(owner)),
                ("postmortem", lambda: self.postmortem(owner)),
                ("large", lambda: self.large(owner, small)),
            ]
            for name, step in steps:
                if self.only is not None and name not in self.only:
                    continue
                if name == "large" and self.quick:
                    continue
                done = step()
                if done is not None:
                    await done
        finally:
            await owner.close()


def _transfer(n: int) -> list[Posting]:
    """A deposit to one of 5,000 accounts and a payment from it to one of 997 others."""
    return [Posting("@world", f"ingest-{n % 5000}", 100, "USD/2"),
            Posting(f"ingest-{n % 5000}", f"acct-{n % 997 + 1}", 40, "USD/2")]


def _held(n: int) -> list[Posting]:
    """A hold of two postings from the outside world, like `_transfer`'s two (and always fundable)."""
    return [Posting("@world", f"ingest-{n % 5000}", 100, "USD/2"), Posting("@world", f"acct-{n % 997 + 1}", 40,
                                                                          "USD/2")]


def _cache_counts(url: str) -> dict[str, float]:
    """The balance cache's counts from /metrics (one worker's, when there are several)."""
    text = httpx.get(f"{url}/metrics").text
    found = dict(re.findall(r'^ledger_api_balance_cache_reads_total\{result="(\w+)"\} (\S+)$', text, re.M))
    hits, misses = float(found.get("hit", 0)), float(found.get("miss", 0))
    return {"hits": hits, "misses": misses, "hit_ratio": round(hits / (hits + misses), 4) if hits else 0.0}


def _profile(pid: int, label: str) -> subprocess.Popen[bytes] | None:
    """With LEDGER_BENCH_PROFILE=1, py-spy samples `pid` until stopped: collapsed stacks in bench/results."""
    if os.environ.get("LEDGER_BENCH_PROFILE") != "1":
        return None
    out = RESULTS / f"profile-{label}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-r", "250",
                             "-f", "raw", "-o", str(out), "--nonblocking"], stdout=subprocess.DEVNULL)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "uname": " ".join(os.uname()), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime())}


def _row(name: str, r: dict[str, Any]) -> str:
    return (f"| {name} | {r['rate']}/s | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['max_ms']:.1f} | {r['achieved_rps']} | {r['errors']} |")


def _cpu(row: dict[str, Any]) -> str:
    return f"; {tools.cpu_text(row['cpu'])}" if "cpu" in row else ""


def fairness_lines(f: dict[str, Any]) -> list[str]:
    alone = f["alone"]
    lines = [f"fair shares: a victim's POST ?wait=true at {f['victim_rate']}/s, p99 alone {alone['p99_ms']:.1f} ms "
             "(target: within 2x, or under 50 ms, during any other tenant's flood)"]
    for label, key in (("another tenant's HTTP flood (64 connections), default limits", "http_flood"),
                       ("the same flood with a limit it never reaches", "http_flood_unlimited")):
        row = f[key]
        lines.append(f"  {label}: victim p99 {row['victim']['p99_ms']:.1f} ms ({row['ratio_p99']}x), p50 "
                     f"{row['victim']['p50_ms']:.1f} ms; flood {row['flood_rps']:.0f} req/s, {row['flood_refused']} "
                     f"refused; API {row['api_cpu_us_per_request']} CPU-us per flood request" + _cpu(row))
    if "refusal_cost" in f:
        cost = f["refusal_cost"]
        refused, served = cost["refused"], cost["served"]
        lines.append(f"  the flood alone, refused: {refused['rps']:.0f} requests/s from 64 connections (held), "
                     f"the API {refused['api_cores']:.3f} cores, {refused['api_cpu_us']} CPU-us a refusal; served: "
                     f"{served['rps']:.0f}/s, {served['api_cores']:.3f} cores, {served['api_cpu_us']} CPU-us a write "
                     f"(the API idle: {cost['api_idle_cores']:.3f} cores, taken off both)")
    for label, key in (("a flood straight to Kafka, a victim on its partition", "kafka_flood"),
                       (f"the same with a quota of {f['kafka_flood_quota']['quota_bytes_per_s']} B/s on its client.id",
                        "kafka_flood_quota")):
        row = f[key]
        lines.append(f"  {label}: victim p99 {row['victim']['p99_ms']:.1f} ms ({row['ratio_p99']}x); flood "
                     f"{row['rps']} records/s acknowledged")
    return lines


def report(results: dict[str, Any]) -> str:
    lines = ["", "| measurement | rate | p50 ms | p95 ms | p99 ms | max ms | achieved | errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label in ("reads_10k", "reads_1m"):
        lines += [_row(f"balance read, {r['accounts']:,} accounts", r) for r in results.get(label, [])]
    lines += [_row(f"balance read, {r['accounts']:,} accounts, each with an open hold", r)
              for r in results.get("reads_10k_held", [])]
    lines += [_row(f"history page, {label}", r) for label, r in results.get("history", {}).items()]
    lines += [_row("POST ?wait=true", r) for r in results.get("ingest_http_wait", [])]
    lines += [_row("producer client, append to outcome", r) for r in results.get("ingest_client", [])]
    sat = results.get("saturation")
    if sat:
        lines += ["", f"saturation (wrk, 64 connections): balance {sat['balance']['rps']:.0f} req/s "
                      f"(p99 {sat['balance']['p99_ms']} ms), static /healthz {sat['static']['rps']:.0f} req/s, "
                      f"ratio {sat['ratio']}x"]
    if "round_trips" in results:
        rt = results["round_trips"]
        lines.append(f"database statements per balance read: {rt['per_request']} "
                     f"({rt['statements']} / {rt['requests']})")
    if "ingest_direct" in results:
        i = results["ingest_direct"]
        lines.append(f"ingest straight to Kafka, {i.get('projectors', 1)} projector process(es): "
                     f"{i['tx_per_s']} committed tx/s "
                     f"({i['measured']} tx in {i['seconds']} s), {i['wal_bytes_per_tx']} WAL bytes per transfer"
                     + _cpu(i))
    if "ceiling" in results:
        c = results["ceiling"]
        lines.append(f"PostgreSQL's ceiling for the same rows (COPY + balances upsert, batches of {ceiling.BATCH}, "
                     f"LIKE tables): {c['tx_per_s']} tx/s, {c['wal_bytes_per_tx']} WAL bytes/tx; projector at "
                     f"{c['ratio']}x (target 0.8x)" + _cpu(c))
    for label in [k for k in results if k.startswith("ingest_direct_")]:
        i = results[label]
        build = "compiled" if i.get("compiled", True) else "pure Python"
        lines.append(f"ingest with {i['projectors']} projector process(es), ledger/ {build}: {i['tx_per_s']} "
                     f"committed tx/s, {i.get('ratio')}x the ceiling (target 0.8x)"
                     + _cpu(i))
    if "ingest_mix" in results:
        i = results["ingest_mix"]
        lines.append(f"ingest, half holds and half captures: {i['tx_per_s']} decided requests/s "
                     f"({i.get('ratio_to_transfers')}x the transfers above, same run; {i['decided']})")
    if "replay" in results:
        r = results["replay"]
        lines.append(f"replay into an empty database: {r['events_per_s']} events/s ({r['events']} in {r['seconds']} s)")
    if "batches" in results:
        b = results["batches"]
        lines.append(f"transfers committed per second over HTTP with wait=true: one per request {b['single']}, "
                     f"batches of 100 {b['batch_100']} ({b['ratio']}x)")
    for tenant, info in results.get("queries", {}).items():
        lines.append(f"queries on {tenant} ({info['transactions']:,} transactions, {info['accounts']:,} accounts), "
                     "p50 / p99 ms at 100/s:")
        lines += [f"  {name}: {row['p50_ms']:.2f} / {row['p99_ms']:.2f}" + (f" ({row['errors']} errors)"
                                                                              if row["errors"] else "")
                  for name, row in info["timings"].items()]
    if "waited" in results:
        lines += ["", *waited.lines(results["waited"])]
    if "fairness" in results:
        lines += ["", *fairness_lines(results["fairness"])]
    if "postmortem" in results:
        pm = results["postmortem"]
        lines += ["", f"post-mortem scenario: {pm['tenants']} tenants x {pm['wallets_per_tenant']:,} wallets x "
                      f"{pm['transactions_per_tenant']:,} transactions through the log; the three endpoints at once, "
                      "each with its users (connections); SLA p95 < 150 ms, p99 < 300 ms, errors < 0.1% (the seed's "
                      "balance read: mean 471 ms, p95 480, p99 625)",
                  "| load | users | endpoint | rate | achieved | mean ms | p95 ms | p99 ms | errors | SLA |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for level in pm["levels"]:
            for name, r in level["endpoints"].items():
                lines.append(f"| {level['multiple']}x | {level.get('users', postmortem.USERS)} | {name} | "
                             f"{r['rate']}/s | {r['achieved_rps']}/s | {r['mean_ms']:.1f} | "
                             f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']}/{r['requests']} | "
                             f"{'met' if postmortem.verdict(r) else 'MISSED'} |")
        lines += [f"post-mortem {level['multiple']}x, {level['users']} users: {tools.cpu_text(level['cpu'])}"
                  for level in pm["levels"] if "cpu" in level]
        if pm.get("levers_at_10x"):
            lines += ["", "post-mortem at 10x (64 users), each lever taken away in turn (same run):",
                      "| stack | balance read p95/p99 ms | history page p95/p99 ms | transfer p95/p99 ms, achieved "
                      "| CPU |",
                      "| --- | --- | --- | --- | --- |"]
            for lever in pm["levers_at_10x"]:
                e = lever["endpoints"]
                cells = [f"{e[n]['p95_ms']:.0f} / {e[n]['p99_ms']:.0f}" for n in ("balance read", "history page")]
                t = e["transfer, wait=true"]
                lines.append(f"| {lever['lever']} | {cells[0]} | {cells[1]} | {t['p95_ms']:.0f} / {t['p99_ms']:.0f}, "
                             f"{t['achieved_rps']}/s | {tools.cpu_text(lever['cpu'])} |")
    if "isolation" in results:
        r = results["isolation"]
        lines.append(f"poison isolation, batch of {r['batch']} applied the plain way: clean {r['clean_s']} s, "
                     f"with one record PostgreSQL refuses {r['poisoned_s']} s ({r['ratio']}x)")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label in ("reads_10k", "reads_1m"):
        rows = results.get(label, [])
        if rows:
            ax.plot([r["rate"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=f"{label} p99")
            ax.plot([r["rate"] for r in rows], [r["p50_ms"] for r in rows], marker=".", linestyle="--",
                    label=f"{label} p50")
    ax.set_xlabel("offered rate (req/s, open loop)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title("Balance reads")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a reduced run, under 3 minutes")
    parser.add_argument("--only", help="comma-separated steps to run (reads, saturation, round_trips, history, "
                        "ingest, mix, held, client, http, replay, isolation, batches, queries, large)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tools.vegeta()
    tools.wrk()
    started_pg, started_kafka = local.up()
    bench = Bench(args.quick, set(args.only.split(",")) if args.only else None)
    began = time.monotonic()
    try:
        bench.start()
        asyncio.run(bench.run())
    finally:
        bench.stop()
        asyncio.run(remove_world(bench.cfg))
        local.stop_started(started_pg, started_kafka)
    bench.results["total_seconds"] = round(time.monotonic() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(bench.results, indent=2, default=str))
    plotted = plot(bench.results, RESULTS / f"{stamp}.png")
    print(report(bench.results))
    print(f"\nresults: {RESULTS / f'{stamp}.json'}" + (f" and {stamp}.png" if plotted else ""))


if __name__ == "__main__":
    main()
