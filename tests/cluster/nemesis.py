"""The nemesis over `make cluster` (contract v3, "surviving the loss of a machine"; issue 23, "Proving it").

`make soak-cluster` runs it (LEDGER_SOAK_SECONDS, default 1800; LEDGER_SOAK_SEED, else a random seed that is
printed): over the running cluster (started here, and stopped after, if none runs), clients write and read
while a seeded nemesis loses one machine at a time, waits until the cluster is whole again, and loses the next.

Faults (each healed before the next: the supervisor brings the process back, and the nemesis waits until both
APIs are ready, both projectors run, every partition of both topics has its three replicas in sync, and the
monitor sees one PostgreSQL node `primary` and the other `secondary`):
- `kill_kafka_controller`: SIGKILL of the Kafka node that is the active KRaft controller (the highest
  `leaderEpoch` in the nodes' `__cluster_metadata-0/quorum-state`);
- `kill_kafka_leader`: SIGKILL of the node that leads the busy partition of one of the run's tenants;
- `stop_kafka`: SIGSTOP of a Kafka node for longer than its session timeout (4 s), then SIGCONT (a hang);
- `kill_primary` / `kill_standby`: SIGKILL of every process of that PostgreSQL machine's `name` in
  `.data/cluster.json` (its postgres and its pg_autoctl);
- `kill_api`, `kill_projector`: SIGKILL of one of the two.

Clients, as tests/faults/nemesis.py has them: HTTP writers spread over both APIs (transfers, holds, captures,
voids and reversals among a fixed set of accounts, with and without `wait=true`), a Kafka writer with the
producer client (`LedgerProducer`, bootstrap = the three brokers), and a bank-style checker: readers that read
every fixed account of a tenant in one snapshot read (`GET .../accounts?address=...`) through each API and
check that the total never changes (the accounts are funded once from @world, which is not in the set, and
money only moves among them).

Anomalies (0 is the only pass): a snapshot whose total differs; any read or write answered 500; an
acknowledged id (200/201/202/409, or the producer's acknowledgement) not on the log, or not decided (an id on
the log twice is counted and shown, not an anomaly: the fold applies it once); an `append_unconfirmed` id that
resolves but is not on the log, or is on the log and not decided; a
`wait=true` answer the projection contradicts; an id applied twice (entries at two log offsets); a decided
request with no outcome on `ledger.outcomes`; `held` not the open holds; balances not summing to zero per tenant
and asset; `ledger verify` not exact; a fault not healed in time; the contract's bounds missed (writes accepted
again within 10 s of a Kafka node's SIGKILL, `wait=true` writes committing within 30 s of the primary's).

Per kind of fault the report gives: count; `refused_s` (per fault, the longest over the two APIs of: from
sending the first write refused after the fault, i.e. answered neither 2xx nor 409, to the answer of the first
write accepted again that was sent after the last refused one (for a `wait=true` write answered 202, its
answer less the wait it timed out: it was appended before waiting); 0 when none was refused) and `back_s`
(from the fault to that acceptance); `commit_again_s` (from the fault to the first 201 of a `wait=true` write
sent after it), each as p50/max; reads that failed, by API and status (0 = no answer: the connection failed
or timed out), counted from the fault until it was healed (a killed API's own readers lose their connection:
the contract's promise is the other API's reads); anomalies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from client import AppendUnconfirmed, LedgerProducer
from infra.kafka import log_end
from infra.settings import OUTCOMES_TOPIC, TRANSACTIONS_TOPIC
from ledger.requests import Posting
from ops.verify import verify
from projections.replay import read_log
from tests.bank import ACCOUNTS, FUND, HELD_MISMATCH, posting
from tools import postgres_nodes

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".data"
STATE_FILE = DATA / "cluster.json"
BASE = DATA / "cluster"
START_TIMEOUT_S = 240
WAIT_S = 3.0  # a wait=true write's timeout_ms
HEAL_LIMIT_S = 600.0  # whole again within this, or the faults end (an anomaly)
HEAL_TIMEOUT_S = 120.0  # a primary's machine back as a standby took 16-20 s in docs/cluster.md
CATCH_UP_TIMEOUT_S = 300.0
PAUSE_S = (3.0, 8.0)  # of calm between a fault's healing and the next fault
STOP_S = (6.0, 12.0)  # a SIGSTOPped Kafka node hangs this long: past its 4 s session timeout
KAFKA_BACK_S = 10.0  # contract: writes accepted again within 10 s of a Kafka node's loss
PRIMARY_BACK_S = 30.0  # contract: wait=true writes commit again within 30 s of the primary's loss
TENANTS = 2
HTTP_WRITERS = 6
FAULTS = ("kill_kafka_controller", "kill_kafka_leader", "stop_kafka", "kill_primary", "kill_standby",
          "kill_api", "kill_projector")
ACCEPTED = (200, 201, 202, 409)

log = logging.getLogger("nemesis")


def say(message: str) -> None:
    print(f"[nemesis {time.strftime('%H:%M:%S')}] {message}", flush=True)


def state() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(STATE_FILE.read_text())
    return loaded


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


def ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    return False


def readiness(url: str) -> str:
    with contextlib.suppress(httpx.HTTPError):
        answer = httpx.get(f"{url}/readyz", timeout=2)
        return f"{answer.status_code} {answer.text[:400]}"
    return "no answer"


def cluster_up() -> bool:
    return STATE_FILE.exists() and all(ready(url) for url in state()["api"])


@dataclass
class Write:
    sent: float
    answered: float
    api: int
    wait: bool
    status: int


@dataclass
class Fault:
    kind: str
    target: str
    at: float  # time.time() of the signal
    healed: float = 0.0


@dataclass
class Books:
    """Everything the clients were told, for the checks afterwards."""

    acknowledged: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, id) -> how
    unconfirmed: set[tuple[str, str]] = field(default_factory=set)
    answered: dict[tuple[str, str], str] = field(default_factory=dict)  # wait=true: the status answered
    holds: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    transfers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: Counter[str] = field(default_factory=Counter)
    writes: list[Write] = field(default_factory=list)
    reads: list[tuple[float, int, int]] = field(default_factory=list)  # sent, api, status
    snapshots: int = 0


class ClusterNemesis:
    def __init__(self, seed: int, seconds: float) -> None:
        self.seed = seed
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.books = Books()
        self.faults: list[Fault] = []
        self.anomalies: list[str] = []
        self.anomaly_kinds: Counter[str] = Counter()
        self.current: Fault | None = None
        self.stop = asyncio.Event()
        self.tenants: dict[str, str] = {}
        cluster = state()
        self.api: list[str] = cluster["api"]
        self.bootstrap: str = cluster["kafka_bootstrap"]
        self.database_url: str = cluster["database_url"]
        self.admin_token = Path(cluster["admin_token_file"]).read_text().strip()
        self.killed: set[int] = set()
        self.started = time.time()
        self.heal_failed = False
        self.repairs: list[str] = []
        self.copies: dict[tuple[str, str], list[tuple[int, int, float]]] = defaultdict(list)
        self.duplicated: list[str] = []  # ids on the log more than once (applied once), with their copies

    def anomaly(self, text: str) -> None:
        """An anomaly, counted against the fault in progress (if any) when it was seen."""
        kind = self.current.kind if self.current is not None else "between or after faults"
        self.anomaly_kinds[kind] += 1
        self.anomalies.append(f"[{kind}] {text}")

    # --- where things are ------------------------------------------------------------------------------

    def pids(self, name: str) -> list[int]:
        return [p["pid"] for p in state()["processes"] if p["name"] == name]

    def names(self, role: str) -> list[str]:
        return sorted({p["name"] for p in state()["processes"] if p["role"] == role})

    def pg_roles(self) -> dict[str, bool]:
        return {p["name"]: p["primary"] for p in state()["processes"] if p["role"] == "postgres"}

    @staticmethod
    def controller() -> str:
        """The active KRaft controller: the leader of the highest epoch any node's quorum-state file knows."""
        best = (-1, -1)
        for n in (1, 2, 3):
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                quorum = json.loads((BASE / f"kafka-{n}" / "log" / "__cluster_metadata-0" / "quorum-state")
                                    .read_text())
                best = max(best, (int(quorum["leaderEpoch"]), int(quorum["leaderId"])))
        if best[1] < 0:
            raise RuntimeError("no node knows the KRaft leader")
        return f"kafka-{best[1]}"

    async def topics(self) -> list[dict[str, Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            found: list[dict[str, Any]] = await admin.describe_topics([TRANSACTIONS_TOPIC, OUTCOMES_TOPIC])
            return found
        finally:
            await admin.close()

    async def partition_leader(self, tenant: str) -> str:
        (topic,) = [t for t in await self.topics() if t["topic"] == TRANSACTIONS_TOPIC]
        partition = (murmur2(tenant.encode()) & 0x7FFFFFFF) % len(topic["partitions"])
        return f"kafka-{next(p['leader'] for p in topic['partitions'] if p['partition'] == partition)}"

    async def monitor_states(self) -> dict[str, tuple[str, str]]:
        conn = await asyncpg.connect(postgres_nodes.monitor_url(), timeout=3)
        try:
            rows = await conn.fetch("SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node")
            return {r["nodename"]: (r["reportedstate"], r["goalstate"]) for r in rows}
        finally:
            await conn.close()

    async def whole(self) -> str | None:
        """None when the cluster is whole again; else what is still missing."""
        cluster = state()
        for role, count in (("kafka", 3), ("projector", 2), ("api", 2), ("postgres", 2)):
            running = [p for p in cluster["processes"] if p["role"] == role and p["pid"] not in self.killed
                       and alive(p["pid"])]
            if len(running) != count:
                return f"{len(running)} of {count} {role} processes running"
        for n, url in enumerate(self.api):
            if not await asyncio.to_thread(ready, url):
                return f"api-{n + 1} not ready: {await asyncio.to_thread(readiness, url)}"
        try:
            for topic in await self.topics():
                for p in topic["partitions"]:
                    if p["leader"] < 0 or len(p["isr"]) < 3:
                        return f"{topic['topic']}/{p['partition']}: leader {p['leader']}, isr {p['isr']}"
        except Exception as e:  # Kafka not answering yet
            return f"Kafka metadata: {e!r}"
        try:
            states = await self.monitor_states()
        except Exception as e:
            return f"monitor: {e!r}"
        data = {name: s for name, s in states.items() if name in ("pg1", "pg2")}
        reported = sorted(r for r, g in data.values() if r == g)
        if reported != ["primary", "secondary"]:
            return f"pg_auto_failover states {data}"
        roles = self.pg_roles()
        if sorted(roles.values()) != [False, True]:
            return f"postgres roles in cluster.json {roles}"
        return None

    async def heal(self) -> float:
        """Until the cluster is whole again. An API that stays unready is an anomaly; it is then repaired
        (SIGKILLed, so that the supervisor starts it afresh) and the soak goes on; anything else ends the faults."""
        started = time.monotonic()
        repaired = False
        while True:
            missing = await self._whole_within(HEAL_TIMEOUT_S)
            if missing is None:
                return time.monotonic() - started
            stuck = missing.split(" ")[0]
            if not (stuck.startswith("api-") and " not ready" in missing) or repaired:
                # A node that is slow to rejoin (a failed pg_rewind falls back to pg_basebackup, which waits for
                # the primary's spread checkpoint: 166 s once) is not an anomaly in itself: wait longer.
                say(f"not whole after {time.monotonic() - started:.0f} s ({missing}); waiting up to "
                    f"{HEAL_LIMIT_S:.0f} s in all")
                missing = await self._whole_within(HEAL_LIMIT_S - (time.monotonic() - started))
                if missing is not None:
                    self.anomaly(f"the cluster was not whole again within {HEAL_LIMIT_S:.0f} s: {missing}")
                    self.heal_failed = True
                return time.monotonic() - started
            self.anomaly(f"the cluster was not whole again within {HEAL_TIMEOUT_S:.0f} s: {missing}")
            say(f"repair: {stuck} stayed unready ({missing}); SIGKILL, for the supervisor to start it afresh")
            self.repairs.append(f"{_clock(time.time())} {stuck}: {missing}")
            self.kill_machine(stuck)
            repaired = True

    async def _whole_within(self, timeout_s: float) -> str | None:
        started = time.monotonic()
        missing: str | None = "?"
        while time.monotonic() - started < timeout_s:
            missing = await self.whole()
            if missing is None:
                return None
            await asyncio.sleep(0.5)
        return missing

    # --- the faults ------------------------------------------------------------------------------------

    def kill_machine(self, name: str) -> None:
        pids = self.pids(name)
        if not pids:
            raise RuntimeError(f"no process named {name}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.killed.add(pid)

    async def inject(self, kind: str) -> Fault:
        if kind == "kill_kafka_controller":
            target = self.controller()
        elif kind == "kill_kafka_leader":
            target = await self.partition_leader(self.rng.choice(list(self.tenants)))
        elif kind == "stop_kafka":
            target = self.rng.choice(self.names("kafka"))
        elif kind in ("kill_primary", "kill_standby"):
            roles = self.pg_roles()
            wanted = kind == "kill_primary"
            (target,) = [name for name, primary in roles.items() if primary == wanted]
        elif kind == "kill_api":
            target = self.rng.choice(self.names("api"))
        else:
            target = self.rng.choice(self.names("projector"))
        fault = Fault(kind, target, time.time())
        if kind == "stop_kafka":
            (pid,) = self.pids(target)
            hang = self.rng.uniform(*STOP_S)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(hang)
            finally:
                os.kill(pid, signal.SIGCONT)
            fault.target = f"{target} for {hang:.1f} s"
        else:
            self.kill_machine(target)
        return fault

    async def _nemesis(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not self.heal_failed:
            await asyncio.sleep(self.rng.uniform(*PAUSE_S))
            kind = self.rng.choice(FAULTS)
            self.current = Fault(kind, "?", time.time())
            fault = await self.inject(kind)
            self.current = fault
            self.faults.append(fault)
            took = await self.heal()
            fault.healed = time.time()
            self.current = None
            say(f"{kind} ({fault.target}): whole again after {fault.healed - fault.at:.1f} s "
                f"(healing checks {took:.1f} s)")
        self.stop.set()

    # --- the clients -----------------------------------------------------------------------------------

    async def _http_writer(self, n: int) -> None:
        rng = random.Random(self.rng.random())
        api = n % len(self.api)
        tenant, key = list(self.tenants.items())[(n // len(self.api)) % len(self.tenants)]
        async with httpx.AsyncClient(base_url=self.api[api], timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            while not self.stop.is_set():
                await asyncio.sleep(rng.uniform(0.01, 0.05))
                await self._http_request(client, rng, tenant, api)

    async def _http_request(self, client: httpx.AsyncClient, rng: random.Random, tenant: str, api: int) -> None:
        books = self.books
        kind = rng.choice(("transfer", "transfer", "transfer", "hold", "capture", "void", "reverse"))
        account, other = rng.sample(ACCOUNTS, 2)
        wait = rng.random() < 0.5
        params = {"wait": "true", "timeout_ms": str(int(WAIT_S * 1000))} if wait else {}
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
        sent = time.time()
        try:
            response = await client.post(f"/v1/tenants/{tenant}{path}", params=params, json=body)
        except httpx.HTTPError:
            books.writes.append(Write(sent, time.time(), api, wait, 0))
            return
        books.writes.append(Write(sent, time.time(), api, wait, response.status_code))
        answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code >= 500 and response.status_code != 503:
            self.anomaly(f"write answered {response.status_code} by api-{api + 1} at "
                                  f"{_clock(sent)} ({kind}): {response.text[:300]}")
        if response.status_code == 503 and answer.get("id"):
            books.unconfirmed.add((tenant, answer["id"]))
            return
        if response.status_code not in ACCEPTED:
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

    async def _bank_reader(self, api: int) -> None:
        """Every fixed account of a tenant in one snapshot read; their total never changes."""
        rng = random.Random(self.rng.random())
        clients = {tenant: httpx.AsyncClient(base_url=self.api[api], timeout=30,
                                             headers={"Authorization": f"Bearer {key}"})
                   for tenant, key in self.tenants.items()}
        params = [("address", a) for a in ACCOUNTS]
        try:
            while not self.stop.is_set():
                await asyncio.sleep(rng.uniform(0.02, 0.08))
                tenant = rng.choice(list(self.tenants))
                sent = time.time()
                self.books.requests["http snapshot read"] += 1
                try:
                    response = await clients[tenant].get(f"/v1/tenants/{tenant}/accounts", params=params)
                except httpx.HTTPError:
                    self.books.reads.append((sent, api, 0))
                    continue
                self.books.reads.append((sent, api, response.status_code))
                if response.status_code >= 500 and response.status_code != 503:
                    self.anomaly(f"read answered {response.status_code} by api-{api + 1} at "
                                          f"{_clock(sent)}: {response.text[:300]}")
                if response.status_code != 200:
                    continue
                body = response.json()
                got = [a["address"] for a in body["accounts"]]
                total = sum(a["balances"].get("USD/2", 0) for a in body["accounts"])
                self.books.snapshots += 1
                if got != ACCOUNTS or total != FUND * len(ACCOUNTS):
                    self.anomaly(f"snapshot of {tenant} through api-{api + 1} at {_clock(sent)} "
                                          f"(position {body.get('position')}): total {total}, not "
                                          f"{FUND * len(ACCOUNTS)}; accounts {got}")
        finally:
            for client in clients.values():
                await client.aclose()

    async def _kafka_writer(self) -> None:
        rng = random.Random(self.rng.random())
        tenants = list(self.tenants)
        while not self.stop.is_set():
            try:
                async with LedgerProducer(self.bootstrap, follow_outcomes=False, topic=TRANSACTIONS_TOPIC,
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
            except Exception as e:  # a new producer, as a service would
                log.warning("the producer failed: %r", e)
                await asyncio.sleep(0.5)

    # --- the run ---------------------------------------------------------------------------------------

    async def setup(self) -> None:
        admin = {"Authorization": f"Bearer {self.admin_token}"}
        async with httpx.AsyncClient(base_url=self.api[0], timeout=60) as client:
            for n in range(TENANTS):
                tenant = f"bank-{self.seed}-{int(time.time())}-{n}"
                created = await client.post("/v1/tenants", json={"id": tenant, "name": tenant}, headers=admin)
                assert created.status_code == 201, created.text
                key = await client.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]},
                                        headers=admin)
                assert key.status_code == 201, key.text
                self.tenants[tenant] = key.json()["key"]
                funded = await client.post(f"/v1/tenants/{tenant}/transactions", params={"wait": "true"},
                                           headers={"Authorization": f"Bearer {key.json()['key']}"},
                                           json={"postings": [posting("@world", a, FUND) for a in ACCOUNTS]})
                assert funded.status_code == 201, funded.text

    async def run(self) -> dict[str, Any]:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        say(f"seed {self.seed}, {self.seconds:.0f} s; waiting for the cluster to be whole")
        await self.heal()
        await self.setup()
        say(f"tenants {list(self.tenants)} funded; clients and faults start")
        started = time.monotonic()
        clients = [asyncio.create_task(self._http_writer(n)) for n in range(HTTP_WRITERS)]
        clients += [asyncio.create_task(self._bank_reader(api)) for api in range(len(self.api))]
        clients.append(asyncio.create_task(self._kafka_writer()))
        try:
            await self._nemesis()
        finally:
            self.stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
        seconds = time.monotonic() - started
        say("faults over; waiting for the cluster to be whole and the projection to catch up")
        await self.heal()
        await self.caught_up()
        say("checking")
        await self.check()
        return self.summary(seconds)

    async def caught_up(self) -> None:
        end = await log_end(self.bootstrap, TRANSACTIONS_TOPIC)
        conn = await asyncpg.connect(self.database_url)
        try:
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while time.monotonic() < deadline:
                rows = await conn.fetch("SELECT * FROM api_offsets()")
                applied = {r["log_partition"]: r["next_offset"] for r in rows}
                if all(applied.get(p, 0) >= offset for p, offset in end.items()):
                    return
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        self.anomaly(f"the projection did not reach the end of the log {end} in {CATCH_UP_TIMEOUT_S} s")

    # --- the checks ------------------------------------------------------------------------------------

    async def check(self) -> None:
        books = self.books
        tenants = list(self.tenants)
        on_log = await self._log_ids(tenants)
        outcomes = await self._outcome_ids(tenants)
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute("SELECT ledger_use_live()")
            decided = {(r["tenant"], r["id"]): r["status"] for r in await conn.fetch(
                "SELECT tenant, id, status FROM transactions WHERE tenant = ANY($1)"
                " UNION ALL SELECT r.tenant, r.id, t.status FROM replays r JOIN transactions t"
                " ON t.tenant = r.tenant AND t.id = r.original_id WHERE r.tenant = ANY($1)", tenants)}
            # An id on the log twice is not itself an anomaly: an idempotent producer can still write a retried
            # batch again when its epoch is bumped after a leader change (KIP-360), and the fold applies an id
            # once (checked below: entries at one log offset, verify exact). The copies are counted and shown.
            for ident in list(books.acknowledged) + list(books.unconfirmed):
                if on_log.get(ident, 0) > 1:
                    self.duplicated.append(f"{ident}: {self.on_log(ident)}")
                    self.current = None
            for ident, how in books.acknowledged.items():
                if on_log.get(ident, 0) == 0:
                    self.anomaly(f"{how} {ident} acknowledged, not on the log")
                elif ident not in decided:
                    self.anomaly(f"{how} {ident} acknowledged and on the log, not decided")
            for ident in books.unconfirmed:
                if (on_log.get(ident, 0) >= 1) != (ident in decided):
                    where = self.on_log(ident)
                    self.anomaly(f"unconfirmed {ident}: on the log {on_log.get(ident, 0)} times, "
                                 f"decided {ident in decided}: {where}")
                    self.current = None
            for ident, status in books.answered.items():
                if decided.get(ident) not in (status, None):
                    self.anomaly(f"{ident} answered {status}, decided {decided.get(ident)}")
            for ident in decided:
                if ident not in outcomes:
                    self.anomaly(f"{ident} decided, no outcome on the outcomes topic")
            for r in await conn.fetch("SELECT tenant, transaction_id, count(DISTINCT log_offset) AS n FROM entries"
                                      " WHERE tenant = ANY($1) GROUP BY 1, 2 HAVING count(DISTINCT log_offset) > 1",
                                      tenants):
                self.anomaly(f"{r['tenant']}/{r['transaction_id']} applied at {r['n']} log offsets")
            for r in await conn.fetch("SELECT tenant, asset, sum(balance) AS s FROM balances WHERE tenant = ANY($1)"
                                      " GROUP BY 1, 2 HAVING sum(balance) <> 0", tenants):
                self.anomaly(f"{r['tenant']} {r['asset']} sums to {r['s']}")
            for r in await conn.fetch("SELECT tenant, sum(balance) AS s FROM balances WHERE tenant = ANY($1)"
                                      " AND account = ANY($2) AND asset = 'USD/2' GROUP BY 1", tenants, ACCOUNTS):
                if r["s"] != FUND * len(ACCOUNTS):
                    self.anomaly(f"{r['tenant']}: the fixed accounts hold {r['s']} at the end")
            for r in await conn.fetch(HELD_MISMATCH, tenants):
                self.anomaly(f"{r['tenant']}/{r['account']} held {r['held']}, open holds {r['open']}")
            self.decided = len(decided)
        finally:
            await conn.close()
        verdict = await verify(self.database_url, self.bootstrap, TRANSACTIONS_TOPIC, tenants)
        self.verified = verdict.replayed
        if not verdict.identical:
            self.anomaly(f"ledger verify: {verdict.differences}")
        self.check_bounds()

    async def _read_topic(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        end = await log_end(self.bootstrap, topic)
        return [(r.key, r.value) async for batch in read_log(self.bootstrap, topic, 10_000, end) for r in batch]

    async def _log_ids(self, tenants: list[str]) -> Counter[tuple[str, str]]:
        """How many times each id is on the log; where each copy is (partition-offset@time) in `self.copies`."""
        wanted = {t.encode() for t in tenants}
        ids: Counter[tuple[str, str]] = Counter()
        end = await log_end(self.bootstrap, TRANSACTIONS_TOPIC)
        async for batch in read_log(self.bootstrap, TRANSACTIONS_TOPIC, 10_000, end):
            for r in batch:
                if r.key not in wanted or r.value is None:
                    continue
                body = orjson.loads(r.value)
                if isinstance(body, dict) and isinstance(body.get("id"), str):
                    ident = (body["tenant"], body["id"])
                    ids[ident] += 1
                    self.copies[ident].append((r.partition, r.offset, r.timestamp_ms / 1000))
        return ids

    def on_log(self, ident: tuple[str, str]) -> str:
        """Where an id's copies are on the log, and (for the anomaly's count) the fault in progress then."""
        copies = self.copies.get(ident, [])
        if copies:
            at = copies[0][2]
            self.current = next((f for f in self.faults if f.at <= at <= f.healed), None)
        return ", ".join(f"{p}-{o} at {_clock(t)}" for p, o, t in copies)

    async def _outcome_ids(self, tenants: list[str]) -> set[tuple[str, str]]:
        wanted = set(tenants)
        found = set()
        for _, value in await self._read_topic(OUTCOMES_TOPIC):
            if value is not None:
                body = orjson.loads(value)
                if body.get("tenant") in wanted:
                    found.add((body["tenant"], body["id"]))
        return found

    # --- the figures -----------------------------------------------------------------------------------

    def windows(self, fault: Fault) -> tuple[float | None, float | None, float | None]:
        """refused_s, back_s (both None when no write was refused) and commit_again_s for one fault."""
        end = fault.healed
        refused: float | None = None
        back: float | None = None
        for api in range(len(self.api)):
            mine = [w for w in self.books.writes if w.api == api and w.sent >= fault.at and w.sent <= end]
            bad = [w for w in mine if w.status not in ACCEPTED]
            if not bad:
                continue
            last_bad = max(w.sent for w in bad)
            # Accepted again: when a write sent after the last refused one was appended. An unwaited write's
            # answer says so at once; a waited one answered 202 had been appended before it waited its whole
            # timeout_ms for the projection (its 202 comes that much later).
            good = [w.answered - (WAIT_S if w.wait and w.status == 202 else 0.0) for w in self.books.writes
                    if w.api == api and w.status in (200, 201, 202) and w.sent >= last_bad]
            again = min(good) if good else float("inf")
            refused = max(refused or 0.0, again - min(w.sent for w in bad))
            back = max(back or 0.0, again - fault.at)
        committed = [w.answered for w in self.books.writes if w.wait and w.status == 201 and w.sent >= fault.at]
        commit_again = (min(committed) - fault.at) if committed else None
        return refused, back, commit_again

    def check_bounds(self) -> None:
        for fault in self.faults:
            _, back, commit_again = self.windows(fault)
            self.current = fault
            if fault.kind.startswith("kill_kafka") and back is not None and back > KAFKA_BACK_S:
                self.anomaly(f"bound: {fault.kind} ({fault.target}) at {_clock(fault.at)}: writes accepted "
                                      f"again {back:.1f} s after the loss (> {KAFKA_BACK_S:.0f} s)")
            if fault.kind == "kill_primary" and (commit_again is None or commit_again > PRIMARY_BACK_S):
                self.anomaly(f"bound: kill_primary ({fault.target}) at {_clock(fault.at)}: wait=true "
                                      f"writes committed again after {commit_again} s (> {PRIMARY_BACK_S:.0f} s)")
            self.current = None

    def summary(self, seconds: float) -> dict[str, Any]:
        def spread(values: list[float]) -> dict[str, Any] | None:
            if not values:
                return None
            ordered = sorted(values)
            return {"p50_s": round(ordered[len(ordered) // 2], 2), "max_s": round(ordered[-1], 2)}

        per_kind: dict[str, Any] = {}
        reads_in: dict[str, Counter[str]] = defaultdict(Counter)
        reads = sorted(self.books.reads)
        for fault in self.faults:
            refused, back, commit_again = self.windows(fault)
            entry = per_kind.setdefault(fault.kind, {"count": 0, "refused": [], "back": [], "commit": [],
                                                     "refusing_faults": 0, "healed": []})
            entry["count"] += 1
            entry["refused"].append(refused or 0.0)
            if back is not None:
                entry["back"].append(back)
                entry["refusing_faults"] += 1
            if commit_again is not None:
                entry["commit"].append(commit_again)
            entry["healed"].append(fault.healed - fault.at)
            for sent, api, status in reads:
                if fault.at <= sent <= fault.healed and status != 200:
                    reads_in[fault.kind][f"api-{api + 1} {status}"] += 1
        for sent, api, status in reads:
            if status != 200 and not any(f.at <= sent <= f.healed for f in self.faults):
                reads_in["between faults"][f"api-{api + 1} {status}"] += 1
        kinds = {kind: {"count": e["count"],
                        "refused_s": spread(e["refused"]),
                        "faults_with_refusals": e["refusing_faults"],
                        "writes_back_after_fault_s": spread(e["back"]),
                        "wait_true_commit_again_s": spread(e["commit"]),
                        "whole_again_s": spread(e["healed"]),
                        "failed_reads": dict(reads_in.get(kind, {})),
                        "anomalies": self.anomaly_kinds.get(kind, 0)}
                 for kind, e in sorted(per_kind.items())}
        writes = Counter(str(w.status) for w in self.books.writes)
        return {
            "seed": self.seed, "seconds": round(seconds), "started": _clock(self.started),
            "faults": {kind: v["count"] for kind, v in kinds.items()},
            "per_fault": kinds,
            "failed_reads_between_faults": dict(reads_in.get("between faults", {})),
            "requests": dict(self.books.requests),
            "http_writes_by_status": dict(writes),
            "reads_by_status": dict(Counter(str(s) for _, _, s in reads)),
            "snapshots_checked": self.books.snapshots,
            "acknowledged": len(self.books.acknowledged),
            "unconfirmed": len(self.books.unconfirmed),
            "on_the_log_twice_applied_once": len(self.duplicated),
            "on_the_log_twice_examples": self.duplicated[:10],
            "decided": getattr(self, "decided", None),
            "verify_replayed_records": getattr(self, "verified", None),
            "anomalies": len(self.anomalies),
            "anomalies_by_fault": dict(self.anomaly_kinds),
            "anomaly_examples": self.anomalies[:50],
            "repairs": self.repairs,
            "fault_log": [{"kind": f.kind, "target": f.target, "at": _clock(f.at),
                           "whole_again_s": round(f.healed - f.at, 1)} for f in self.faults],
        }


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def start_cluster() -> subprocess.Popen[bytes] | None:
    """The running `make cluster`, or one started here (returned, to be stopped after)."""
    if cluster_up():
        return None
    say("no cluster is running: starting make cluster")
    log_file = open(DATA / "logs" / "soak-cluster-make-cluster.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([sys.executable, "-m", "tools.cluster"], cwd=ROOT, start_new_session=True,
                            stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not cluster_up():
        if proc.poll() is not None:
            raise SystemExit(f"make cluster exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGTERM)
            raise SystemExit(f"make cluster was not up within {START_TIMEOUT_S} s")
        time.sleep(1)
    return proc


def main() -> None:
    seed = int(os.environ.get("LEDGER_SOAK_SEED") or random.SystemRandom().randrange(2**32))
    seconds = float(os.environ.get("LEDGER_SOAK_SECONDS") or 1800)
    (DATA / "logs").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING)
    proc = start_cluster()
    try:
        nemesis = ClusterNemesis(seed, seconds)
        summary = asyncio.run(nemesis.run())
    finally:
        if proc is not None:
            say("stopping the make cluster started here")
            proc.send_signal(signal.SIGTERM)
            proc.wait(180)
    out = DATA / "logs" / f"soak-cluster-{seed}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    with open(out.with_suffix(".records.jsonl"), "w") as records:
        for w in nemesis.books.writes:
            records.write(json.dumps({"write": _clock(w.sent), "answered": _clock(w.answered), "api": w.api + 1,
                                      "wait": w.wait, "status": w.status}) + "\n")
        for sent, api, status in nemesis.books.reads:
            records.write(json.dumps({"read": _clock(sent), "api": api + 1, "status": status}) + "\n")
    out.with_suffix(".anomalies.txt").write_text("".join(f"{a}\n" for a in nemesis.anomalies))
    print(f"\nsoak-cluster report ({out}):\n{json.dumps(summary, indent=2)}", flush=True)
    if summary["anomalies"]:
        raise SystemExit(f"seed {seed}: {summary['anomalies']} anomalies")


if __name__ == "__main__":
    main()
