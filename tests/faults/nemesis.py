"""A nemesis: random faults at random moments while clients write and read, then every promise is checked.

Clients write transfers, holds, captures, voids and reversals at a steady rate over HTTP (with and without
`wait=true`) and straight to Kafka (the producer client), and read balances with `min_position` right after
their own writes. Meanwhile the nemesis, seeded, picks a fault at random: SIGKILL or SIGSTOP/SIGCONT of one of
the two projectors of the group, SIGKILL of the API, a Kafka broker restart, a PostgreSQL restart, a
`ledger replay` started mid-stream, or every database connection dropped; a supervisor restarts what died,
as `make run` does. After the faults stop and the projection has caught up, `check` finds every anomaly:

- an acknowledged request (2xx, or a producer acknowledgement) not exactly once on the log, or not decided;
- an id handed out that does not resolve (an `append_unconfirmed` id resolves if and only if it is on the log);
- a `wait=true` answer the projection contradicts;
- a `min_position` read answered from before its position, or with a balance the account never had there;
- a tenant and asset whose balances do not sum to zero, an account whose `held` is not its open holds;
- `ledger verify` finding a difference; a decided request with no outcome on the outcomes topic;
- a committed transfer or reversal never delivered to the webhook receiver registered before the load (the
  dispatcher is among what the nemesis kills, mid-delivery), or one event id carrying two transactions.

The time to recover after each fault (until a transfer with `wait=true` commits again) is measured per kind.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson

from client import AppendUnconfirmed, LedgerProducer
from infra.kafka import log_end
from ledger.requests import Posting
from ops.verify import verify
from projections.replay import read_log
from tests.bank import ACCOUNTS, FUND, HELD_MISMATCH, posting
from tests.e2e.receiver import Receiver
from tests.stack import OUTCOMES_TOPIC, SETTINGS, TRANSACTIONS_TOPIC, Stack, opened, unique
from tools import local, processes

PAUSE_S = (2.0, 6.0)  # between faults
RECOVERY_TIMEOUT_S = 120.0
PROCESS_FAULTS = ("kill_projector", "stop_projector", "kill_api", "replay", "drop_connections", "kill_dispatcher")
DELIVERY_TIMEOUT_S = 120.0  # after the run, for the last retries (a few refusals in a row back off to ~30 s)
SERVICE_FAULTS = ("restart_kafka", "restart_postgres")


@dataclass
class Books:
    """Everything the clients were told, for the checks afterwards."""

    acknowledged: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, id) -> how
    unconfirmed: set[tuple[str, str]] = field(default_factory=set)
    answered: dict[tuple[str, str], str] = field(default_factory=dict)  # wait=true: the status answered
    reads: list[tuple[str, str, int, int, int]] = field(default_factory=list)  # tenant, account, balance, at, asked
    holds: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    transfers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: Counter[str] = field(default_factory=Counter)


@dataclass
class Report:
    seed: int
    seconds: float
    faults: Counter[str] = field(default_factory=Counter)
    recovery_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    requests: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def spread(values: list[float]) -> dict[str, float]:
            ordered = sorted(values)
            return {"p50_s": round(ordered[len(ordered) // 2], 2), "max_s": round(ordered[-1], 2)}

        return {"seed": self.seed, "seconds": round(self.seconds), "faults": dict(self.faults),
                "requests": dict(self.requests), "anomalies": len(self.anomalies),
                "anomaly_examples": self.anomalies[:20],
                "recovery": {kind: spread(v) for kind, v in self.recovery_s.items() if v}}


class Nemesis:
    def __init__(self, stack: Stack, seed: int, seconds: float, services: bool) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.report = Report(seed, seconds)
        self.seconds = seconds
        self.faults = PROCESS_FAULTS + (SERVICE_FAULTS if services else ())
        self.books = Books()
        self.stop = asyncio.Event()
        self.calm = asyncio.Event()  # no fault in progress
        self.calm.set()
        self.tenants: dict[str, str] = {}  # id -> key
        self.second: subprocess.Popen[bytes] | None = None
        # The webhook receiver: refuses a few deliveries (500) so that retries happen too.
        receiver_rng = random.Random(seed + 1)
        self.receiver = Receiver(answer=lambda n: 500 if receiver_rng.random() < 0.05 else 200)

    # --- the processes, supervised ---------------------------------------------------------------------

    def _projectors(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.stack.projector, self.second) if p is not None]

    def supervise(self) -> None:
        """Restart whatever died, as `make run` does."""
        self.stack.ensure_projector()
        if self.second is None or self.second.poll() is not None:
            self.second = processes.spawn("projections.app", self.stack.env, self.stack.logs / "projector-2.log")
        assert self.stack.api is not None
        if self.stack.api.poll() is not None:
            self.stack.api = processes.spawn("api", self.stack.env, self.stack.logs / "api.log")
        self.stack.ensure_dispatcher()

    async def _supervisor(self) -> None:
        while not self.stop.is_set():
            self.supervise()
            await asyncio.sleep(0.2)

    # --- the faults ------------------------------------------------------------------------------------

    async def _fault(self, kind: str) -> None:
        if kind == "kill_projector":
            self.rng.choice(self._projectors()).send_signal(signal.SIGKILL)
        elif kind == "stop_projector":
            victim = self.rng.choice(self._projectors())
            victim.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(self.rng.uniform(1, 12))  # past the group's session timeout, sometimes
            finally:
                victim.send_signal(signal.SIGCONT)
        elif kind == "kill_api":
            assert self.stack.api is not None
            self.stack.api.send_signal(signal.SIGKILL)
        elif kind == "kill_dispatcher":  # whatever it is delivering: at least once, by its lease
            assert self.stack.dispatcher is not None
            self.stack.dispatcher.send_signal(signal.SIGKILL)
        elif kind == "restart_kafka":
            await asyncio.to_thread(local.stop_kafka)
            await asyncio.sleep(self.rng.uniform(0.5, 4))
            await asyncio.to_thread(local.start_kafka, False)
        elif kind == "restart_postgres":
            await asyncio.to_thread(local.stop_postgres)
            await asyncio.sleep(self.rng.uniform(0.5, 4))
            await asyncio.to_thread(local.start_postgres, False)
        elif kind == "replay":
            run = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "ops.cli", "replay", "--no-progress"],
                                          env=self.stack.env, capture_output=True, text=True, timeout=600)
            if run.returncode != 0 and "another `ledger replay`" not in run.stderr:
                self.report.anomalies.append(f"ledger replay failed: {run.stderr[-500:]}")
        elif kind == "drop_connections":
            conn = await asyncpg.connect(self.stack.env["LEDGER_DATABASE_URL"])
            try:
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                   " WHERE usename IN ('ledger_api', 'ledger_projector') AND pid <> pg_backend_pid()")
            finally:
                await conn.close()

    async def _nemesis(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(*PAUSE_S))
            kind = self.rng.choice(self.faults)
            self.calm.clear()
            try:
                await self._fault(kind)
                self.report.faults[kind] += 1
                took = await self._recovered()
                self.report.recovery_s[kind].append(took)
            finally:
                self.calm.set()
        self.stop.set()

    async def _recovered(self) -> float:
        """Seconds until a transfer with `wait=true` commits again."""
        started = time.monotonic()
        tenant, key = next(iter(self.tenants.items()))
        async with httpx.AsyncClient(base_url=self.stack.api_url, timeout=5,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            while time.monotonic() - started < RECOVERY_TIMEOUT_S:
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.post(f"/v1/tenants/{tenant}/transactions",
                                                 params={"wait": "true", "timeout_ms": "2000"},
                                                 json={"postings": [posting("@world", "probe", 1)]})
                    if response.status_code == 201:
                        self.books.acknowledged[(tenant, response.json()["id"])] = "probe"
                        return time.monotonic() - started
                await asyncio.sleep(0.1)
        self.report.anomalies.append(f"not recovered within {RECOVERY_TIMEOUT_S} s")
        return RECOVERY_TIMEOUT_S

    # --- the clients -----------------------------------------------------------------------------------

    async def _http_writer(self, n: int) -> None:
        rng = random.Random(self.rng.random())
        tenant, key = list(self.tenants.items())[n % len(self.tenants)]
        async with httpx.AsyncClient(base_url=self.stack.api_url, timeout=15,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            while not self.stop.is_set():
                await asyncio.sleep(rng.uniform(0.01, 0.05))
                with contextlib.suppress(httpx.HTTPError):
                    await self._http_request(client, rng, tenant)

    async def _http_request(self, client: httpx.AsyncClient, rng: random.Random, tenant: str) -> None:
        books = self.books
        kind = rng.choice(("transfer", "transfer", "transfer", "hold", "capture", "void", "reverse"))
        account, other = rng.sample(ACCOUNTS, 2)
        wait = rng.random() < 0.5
        params = {"wait": "true", "timeout_ms": "3000"} if wait else {}
        if kind == "transfer":
            path, body = "/transactions", {"postings": [posting(account, other, rng.randint(1, 100))]}
        elif kind == "hold":
            path, body = "/holds", {"postings": [posting(account, other, rng.randint(1, 100))],
                                    "expires_in_s": rng.choice((1, 5, 3600))}
        elif kind in ("capture", "void"):
            if not books.holds[tenant]:
                return
            path, body = f"/holds/{rng.choice(books.holds[tenant])}/{kind}", None
        else:
            if not books.transfers[tenant]:
                return
            path, body = f"/transactions/{rng.choice(books.transfers[tenant])}/reverse", {}
        books.requests[f"http {kind}"] += 1
        response = await client.post(f"/v1/tenants/{tenant}{path}", params=params, json=body)
        answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code == 503 and answer.get("id"):
            books.unconfirmed.add((tenant, answer["id"]))
            return
        if response.status_code not in (200, 201, 202, 409):
            return
        ident = answer.get("id") or answer.get("transaction", {}).get("id")
        if ident is None:
            return
        books.acknowledged[(tenant, ident)] = f"http {kind}"
        if kind == "hold":
            books.holds[tenant].append(ident)
        elif kind == "transfer":
            books.transfers[tenant].append(ident)
        if response.status_code in (201, 409) and response.headers.get("idempotent-replayed") is None:
            books.answered[(tenant, ident)] = "committed" if response.status_code == 201 else "rejected"
        position = answer.get("position") or answer.get("transaction", {}).get("position")
        if kind == "transfer" and position is not None:
            await self._read_after(client, tenant, account, position)

    async def _read_after(self, client: httpx.AsyncClient, tenant: str, account: str, token: str) -> None:
        """Read your write: the balance of an account just written to, with the write's position."""
        response = await client.get(f"/v1/tenants/{tenant}/accounts/{account}",
                                    params={"min_position": token, "timeout_ms": "3000"})
        self.books.requests["http read"] += 1
        if response.status_code != 200:
            return
        body = response.json()
        at = -1 if body["position"] is None else opened(tenant, body["position"]).offset
        self.books.reads.append((tenant, account, body["balances"].get("USD/2", 0), at,
                                 opened(tenant, token).offset))

    async def _bank_reader(self) -> None:
        """The bank check (contract v3 snapshot reads): money only moves among the fixed accounts once they are
        funded, so every snapshot of all of them, at any position, sees the same total."""
        rng = random.Random(self.rng.random())
        params = [("address", a) for a in ACCOUNTS]
        async with httpx.AsyncClient(base_url=self.stack.api_url, timeout=15) as client:
            while not self.stop.is_set():
                await asyncio.sleep(rng.uniform(0.02, 0.08))
                tenant, key = rng.choice(list(self.tenants.items()))
                self.books.requests["http snapshot read"] += 1
                try:
                    response = await client.get(f"/v1/tenants/{tenant}/accounts", params=params,
                                                headers={"Authorization": f"Bearer {key}"})
                except httpx.HTTPError:
                    continue
                if response.status_code != 200:
                    continue
                body = response.json()
                total = sum(a["balances"].get("USD/2", 0) for a in body["accounts"])
                if total != FUND * len(ACCOUNTS):
                    self.report.anomalies.append(f"snapshot of {tenant} at {body.get('position')}: the accounts "
                                                 f"hold {total}, not {FUND * len(ACCOUNTS)}")

    async def _kafka_writer(self) -> None:
        rng = random.Random(self.rng.random())
        tenants = list(self.tenants)
        while not self.stop.is_set():
            try:
                async with LedgerProducer(SETTINGS.kafka_bootstrap, follow_outcomes=False, topic=TRANSACTIONS_TOPIC,
                                          request_timeout_ms=10_000) as ledger:
                    while not self.stop.is_set():
                        await asyncio.sleep(rng.uniform(0.005, 0.03))
                        tenant = rng.choice(tenants)
                        account, other = rng.sample(ACCOUNTS, 2)
                        self.books.requests["kafka transfer"] += 1
                        try:
                            sent = await ledger.submit(tenant, [Posting(account, other, rng.randint(1, 100), "USD/2")])
                        except AppendUnconfirmed as e:
                            self.books.unconfirmed.add((e.tenant, e.id))
                            continue
                        self.books.acknowledged[(tenant, sent.id)] = "kafka transfer"
            except Exception:  # the broker went away under the client: a new one, as a service would
                await asyncio.sleep(0.5)

    # --- the run ---------------------------------------------------------------------------------------

    async def setup(self, admin: httpx.AsyncClient) -> None:
        await self.receiver.__aenter__()
        for _ in range(3):
            tenant = unique("nemesis")
            created = await admin.post("/v1/tenants", json={"id": tenant})
            assert created.status_code == 201, created.text
            key = await admin.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]})
            self.tenants[tenant] = key.json()["key"]
            async with httpx.AsyncClient(base_url=self.stack.api_url, timeout=30,
                                         headers={"Authorization": f"Bearer {key.json()['key']}"}) as client:
                hooked = await client.post(f"/v1/tenants/{tenant}/webhooks", json={
                    "url": self.receiver.url(), "events": ["transaction.committed"]})
                assert hooked.status_code == 201, hooked.text
                for account in ACCOUNTS:  # funded far beyond what the run moves: transfers commit
                    funded = await client.post(f"/v1/tenants/{tenant}/transactions", params={"wait": "true"},
                                               json={"postings": [posting("@world", account, FUND)]})
                    assert funded.status_code == 201, funded.text

    async def run(self) -> Report:
        started = time.monotonic()
        # Clients losing the broker on purpose: aiokafka logs every reconnection attempt as an error.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        self.supervise()
        clients = [asyncio.create_task(self._http_writer(n)) for n in range(6)]
        clients.append(asyncio.create_task(self._kafka_writer()))
        clients.append(asyncio.create_task(self._bank_reader()))
        supervisor = asyncio.create_task(self._supervisor())
        try:
            await self._nemesis()
        finally:
            self.stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        self.supervise()
        await self.stack.caught_up(restart=True)
        self.report.seconds = time.monotonic() - started
        self.report.requests = self.books.requests
        self.report.requests["unconfirmed (503 append_unconfirmed, or the producer's AppendUnconfirmed)"] = len(
            self.books.unconfirmed)
        await self.check()
        return self.report

    def close(self) -> None:
        if self.second is not None:
            processes.stop(self.second, "second projector")
        if self.receiver.server is not None:
            self.receiver.server.close()

    # --- the checks ------------------------------------------------------------------------------------

    async def check(self) -> None:
        books, anomalies = self.books, self.report.anomalies
        tenants = list(self.tenants)
        on_log = await _log_ids(tenants)
        outcomes = await _outcome_ids(tenants)
        conn = await asyncpg.connect(self.stack.env["LEDGER_DATABASE_URL"])
        try:
            await conn.execute("SELECT ledger_use_live()")
            decided = {(r["tenant"], r["id"]): r["status"] for r in await conn.fetch(
                "SELECT tenant, id, status FROM transactions WHERE tenant = ANY($1)"
                " UNION ALL SELECT r.tenant, r.id, t.status FROM replays r JOIN transactions t"
                " ON t.tenant = r.tenant AND t.id = r.original_id WHERE r.tenant = ANY($1)", tenants)}
            for ident, how in books.acknowledged.items():
                if on_log.get(ident, 0) != 1:
                    anomalies.append(f"{how} {ident} acknowledged, on the log {on_log.get(ident, 0)} times")
                elif ident not in decided:
                    anomalies.append(f"{how} {ident} acknowledged and on the log, not decided")
            for ident in books.unconfirmed:
                if on_log.get(ident, 0) > 1 or (on_log.get(ident, 0) == 1) != (ident in decided):
                    anomalies.append(f"unconfirmed {ident}: on the log {on_log.get(ident, 0)} times, "
                                     f"decided {ident in decided}")
            for ident, status in books.answered.items():
                if decided.get(ident) not in (status, None):
                    anomalies.append(f"{ident} answered {status}, decided {decided.get(ident)}")
            for ident in decided:
                if ident not in outcomes:
                    anomalies.append(f"{ident} decided, no outcome on the outcomes topic")
            # An account's balance after each of its entries, in log order: the balance at a position is that
            # of its last entry at or before it (a hold moves the row's position, not its balance).
            history: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
            for r in await conn.fetch("SELECT tenant, account, log_offset, balance_after FROM entries"
                                      " WHERE tenant = ANY($1) AND asset = 'USD/2' ORDER BY log_offset, leg", tenants):
                history[(r["tenant"], r["account"])].append((r["log_offset"], r["balance_after"]))
            for tenant, account, balance, at, asked in books.reads:
                steps = history[(tenant, account)]
                before = [b for offset, b in steps[:bisect.bisect_right(steps, (at, FUND * 2))]]
                if at < asked:
                    anomalies.append(f"min_position read of {tenant}/{account} answered at {at}, before {asked}")
                elif not before or before[-1] != balance:
                    anomalies.append(f"read {balance} for {tenant}/{account} at {at}; it was "
                                     f"{before[-1] if before else None}")
            for r in await conn.fetch("SELECT tenant, asset, sum(balance) AS s FROM balances WHERE tenant = ANY($1)"
                                      " GROUP BY 1, 2 HAVING sum(balance) <> 0", tenants):
                anomalies.append(f"{r['tenant']} {r['asset']} sums to {r['s']}")
            for r in await conn.fetch(HELD_MISMATCH, tenants):
                anomalies.append(f"{r['tenant']}/{r['account']} held {r['held']}, open holds {r['open']}")
            committed = {(r["tenant"], r["id"]) for r in await conn.fetch(
                "SELECT tenant, id FROM transactions WHERE tenant = ANY($1) AND status = 'committed'"
                " AND kind IN ('transfer', 'reverse')", tenants)}
            anomalies.extend(await self._deliveries(committed))
        finally:
            await conn.close()
        verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC, tenants)
        if not verdict.identical:
            anomalies.append(f"ledger verify: {verdict.differences}")


    async def _deliveries(self, committed: set[tuple[str, str]]) -> list[str]:
        """Every committed transfer and reversal delivered at least once, under one event id of its own."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            by_event: dict[str, set[tuple[str, str]]] = defaultdict(set)
            for got in self.receiver.received:
                body = got.json
                by_event[str(body["id"])].add((str(body["tenant"]), str(body["data"]["id"])))  # type: ignore[index]
            delivered = {ident for idents in by_event.values() for ident in idents}
            missing = committed - delivered
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        found = [f"{len(missing)} committed never delivered, e.g. {sorted(missing)[:5]}"] if missing else []
        found += [f"event {event} carried {sorted(idents)}" for event, idents in by_event.items() if len(idents) > 1]
        events_of: dict[tuple[str, str], set[str]] = defaultdict(set)
        for event, idents in by_event.items():
            for ident in idents:
                events_of[ident].add(event)
        found += [f"{ident} delivered as {len(events)} events" for ident, events in events_of.items()
                  if len(events) > 1]
        found += [f"delivered {ident}, not a committed transfer or reversal" for ident in delivered - committed]
        return found


async def _read_topic(topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` up to its current end."""
    end = await log_end(SETTINGS.kafka_bootstrap, topic)
    return [(r.key, r.value) async for batch in read_log(SETTINGS.kafka_bootstrap, topic, 10_000, end)
            for r in batch]


async def _log_ids(tenants: list[str]) -> Counter[tuple[str, str]]:
    wanted = set(tenants)
    ids: Counter[tuple[str, str]] = Counter()
    for key, value in await _read_topic(TRANSACTIONS_TOPIC):
        if key is None or value is None or key.decode(errors="replace") not in wanted:
            continue
        body = orjson.loads(value)
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            ids[(body["tenant"], body["id"])] += 1
    return ids


async def _outcome_ids(tenants: list[str]) -> set[tuple[str, str]]:
    wanted = set(tenants)
    found = set()
    for _, value in await _read_topic(OUTCOMES_TOPIC):
        if value is not None:
            body = orjson.loads(value)
            if body.get("tenant") in wanted:
                found.add((body["tenant"], body["id"]))
    return found


def seed_and_seconds(default_seconds: float) -> tuple[int, float]:
    """`LEDGER_SOAK_SEED` (else a random one, printed) and `LEDGER_SOAK_SECONDS` (else `default_seconds`)."""
    seed = int(os.environ.get("LEDGER_SOAK_SEED") or random.SystemRandom().randrange(2**32))
    return seed, float(os.environ.get("LEDGER_SOAK_SECONDS") or default_seconds)
