"""Invariants on random histories, against the real stack: the PostgreSQL projection equals a pure fold
of the same log; balances sum to zero; no customer account goes negative; history pages and `?at=` agree
with the fold; replaying the whole log into an empty database reproduces the projection exactly.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infra.kafka import topic_partitions
from infra.migrate import migrate
from ledger.batch import BatchRows, Record, decode_all
from ledger.fold import fold_batch
from ledger.memory import Ledger
from ledger.validation import is_system
from projections.replay import replay
from tests.conftest import live_projection
from tests.model import Model
from tests.stack import OUTCOMES_TOPIC, SETTINGS, TRANSACTIONS_TOPIC, Stack, position_key, unique

EXAMPLES = int(os.environ.get("LEDGER_PROPERTY_EXAMPLES", "100"))
ACCOUNTS = ["@world", "@fees", "a", "b", "c"]
ASSETS = ["USD/2", "EUR/2"]
HUGE = 2**63 - 1

amounts = st.one_of(st.integers(1, 500), st.integers(1, 500), st.sampled_from([HUGE, 2**62]))
postings = st.lists(
    st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), amounts, st.sampled_from(ASSETS))
    .filter(lambda p: p[0] != p[1]),
    min_size=1, max_size=4,
)
keys = st.sampled_from([None, None, None, "k1", "k2"])
requests = st.fixed_dictionaries({
    "kind": st.sampled_from(["tx", "tx", "hold"]),
    "tenant": st.integers(0, 1),
    "postings": postings,
    "key": keys,
    "reuse_id": st.integers(0, 9),
})
# Captures, voids and reversals name an earlier request's id (of either tenant) by its index.
operations = st.fixed_dictionaries({
    "kind": st.sampled_from(["capture", "void", "reverse"]),
    "tenant": st.integers(0, 1),
    "target": st.integers(0, 200),
    "amount": st.one_of(st.none(), st.none(), st.integers(1, 300)),
    "key": keys,
})
malformed = st.fixed_dictionaries({
    "kind": st.just("bad"),
    "tenant": st.integers(0, 1),
    "shape": st.sampled_from(["not_json", "float_amount", "foreign_key", "no_postings", "self_posting"]),
})
# Account policies: a limit on one asset, or frozen, for a customer account.
policies = st.fixed_dictionaries({
    "kind": st.just("policy"),
    "tenant": st.integers(0, 1),
    "account": st.sampled_from(["a", "b", "c"]),
    "limit": st.one_of(st.none(), st.integers(1, 300)),
    "frozen": st.sampled_from([False, False, True]),
    "key": keys,
})
# Atomic batches of one to three transfers.
batches = st.fixed_dictionaries({
    "kind": st.just("batch"),
    "tenant": st.integers(0, 1),
    "items": st.lists(st.tuples(postings, keys), min_size=1, max_size=3),
})
histories = st.lists(st.one_of(requests, requests, requests, operations, operations, policies, batches,
                               malformed), min_size=10, max_size=120)


def _value(event: dict[str, Any], tenant: str, tx_id: str) -> tuple[bytes, bytes]:
    key = tenant.encode()
    if event["kind"] == "bad":
        shape = event["shape"]
        base: dict[str, Any] = {"v": 1, "id": tx_id, "tenant": tenant,
                                "postings": [{"source": "@world", "destination": "a", "amount": 1, "asset": "USD/2"}]}
        if shape == "not_json":
            return key, b'{"v": 1, "id": '
        if shape == "float_amount":
            base["postings"][0]["amount"] = 1.5
        elif shape == "foreign_key":
            key = b"someone-else"
        elif shape == "no_postings":
            base["postings"] = []
        else:
            base["postings"][0]["destination"] = "@world"
        return key, orjson.dumps(base)
    if event["kind"] == "batch":
        items = [{"id": f"{tx_id}-{i}", "idempotency_key": k, "postings": [
            {"source": s, "destination": d, "amount": a, "asset": x} for s, d, a, x in p]}
            for i, (p, k) in enumerate(event["items"])]
        return key, orjson.dumps({"v": 1, "kind": "batch", "id": tx_id, "tenant": tenant, "transactions": items})
    body: dict[str, Any] = {"v": 1, "id": tx_id, "tenant": tenant, "idempotency_key": event["key"]}
    if event["kind"] in ("tx", "hold"):
        body["postings"] = [{"source": s, "destination": d, "amount": a, "asset": x}
                            for s, d, a, x in event["postings"]]
    if event["kind"] == "hold":
        body |= {"kind": "hold", "expires_in_s": 3600}
    elif event["kind"] == "policy":
        body |= {"kind": "policy", "account": event["account"], "frozen": event["frozen"],
                 "overdraft_limit": {"USD/2": event["limit"]} if event["limit"] else {}}
    elif event["kind"] != "tx":
        body |= {"kind": event["kind"], "hold" if event["kind"] != "reverse" else "transaction": event["target_id"]}
        if event["amount"] is not None and event["kind"] != "void":
            body["amount"] = event["amount"]
    return key, orjson.dumps(body)


@dataclass(repr=False)
class World:
    """Connections of this module's own event loop (hypothesis drives synchronous tests).

    Its repr is short: hypothesis prints every argument of each example, and the outcomes seen grow with
    every history (past 30 kB its warning, an error here, fails the run)."""

    stack: Stack
    runner: asyncio.Runner
    producer: AIOKafkaProducer | None = None
    outcomes: AIOKafkaConsumer | None = None
    db: asyncpg.Pool | None = None
    http: httpx.AsyncClient | None = None
    seen_outcomes: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    records: int = 0
    histories: int = 0

    def __repr__(self) -> str:
        return f"World(histories={self.histories}, records={self.records})"

    async def start(self) -> None:
        bootstrap = os.environ["LEDGER_KAFKA_BOOTSTRAP"]
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=2)
        await self.producer.start()
        self.outcomes = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await self.outcomes.start()
        tps = await topic_partitions(self.outcomes, OUTCOMES_TOPIC)
        self.outcomes.assign(tps)
        await self.outcomes.seek_to_end(*tps)
        for tp in tps:  # resolve the end now, before anything is produced
            await self.outcomes.position(tp)
        self.reader = asyncio.create_task(self._read_outcomes())
        self.db = await asyncpg.create_pool(os.environ["LEDGER_DATABASE_URL"], min_size=1, max_size=4,
                                            setup=live_projection)
        self.http = httpx.AsyncClient(base_url=self.stack.api_url, timeout=30,
                                      headers={"Authorization": f"Bearer {self.stack.admin_token}"})

    async def _read_outcomes(self) -> None:
        assert self.outcomes is not None
        async for record in self.outcomes:
            self.seen_outcomes.append(orjson.loads(record.value))

    async def stop(self) -> None:
        assert self.reader is not None and self.outcomes and self.producer and self.db and self.http
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.outcomes.stop()
        await self.producer.stop()
        await self.db.close()
        await self.http.aclose()


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    with asyncio.Runner() as runner:
        w = World(stack, runner)
        runner.run(w.start())
        yield w
        runner.run(w.stop())


async def _produce(w: World, history: list[dict[str, Any]], tenants: list[str]) -> tuple[list[Record], Model]:
    """Append the history; the records as the log holds them, and what the independent model decides."""
    assert w.producer is not None
    model = Model()
    ids: list[str] = []
    sent = []
    for event in history:
        reuse = event.get("reuse_id", 9)
        tx_id = ids[reuse] if reuse < len(ids) and reuse < 2 else unique("x")
        ids.append(tx_id)
        tenant = tenants[event["tenant"]]
        if "target" in event:
            event = {**event, "target_id": ids[event["target"] % len(ids)] if len(ids) > 1 else "none"}
        key, value = _value(event, tenant, tx_id)
        sent.append((key, value, await w.producer.send(TRANSACTIONS_TOPIC, value, key=key)))
        if event["kind"] == "bad":
            model.malformed(tenant, tx_id, readable=event["shape"] not in ("not_json", "foreign_key"))
        elif event["kind"] == "batch" and len({k for _, k in event["items"] if k is not None}) \
                < len([k for _, k in event["items"] if k is not None]):
            model.malformed(tenant, tx_id, readable=True)  # items sharing a key: the record is invalid
        elif event["kind"] == "batch":
            model.atomic(tenant, [(f"{tx_id}-{i}", [tuple(x) for x in p], k)
                                  for i, (p, k) in enumerate(event["items"])])
        else:
            kind = {"tx": "transfer"}.get(event["kind"], event["kind"])
            amount = event.get("amount") if kind in ("capture", "reverse") else None
            target = event["account"] if kind == "policy" else event.get("target_id")
            limits = {"USD/2": event["limit"]} if kind == "policy" and event["limit"] else {}
            model.request(tenant, tx_id, kind, event["key"], [tuple(p) for p in event.get("postings", ())],
                          target, amount, limits, event.get("frozen", False))
    records = []
    for key, value, future in sent:
        metadata = await future
        records.append(Record(metadata.partition, metadata.offset, key, value, metadata.timestamp))
    return records, model


async def _wait_applied(w: World, records: list[Record]) -> None:
    assert w.db is not None
    last: dict[int, int] = {}
    for r in records:
        last[r.partition] = max(last.get(r.partition, -1), r.offset)
    for _ in range(600):
        rows = await w.db.fetch("SELECT log_partition, next_offset FROM projection_offsets")
        applied = {r["log_partition"]: r["next_offset"] for r in rows}
        if all(applied.get(p, 0) > o for p, o in last.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"projection did not reach {last}")


async def _stored(db: asyncpg.Pool, tenants: list[str]) -> dict[str, Any]:
    tx = await db.fetch("SELECT tenant, id, status, reason, log_partition, log_offset, error IS NOT NULL AS has_error "
                        "FROM transactions WHERE tenant = ANY($1)", tenants)
    balances = await db.fetch("SELECT tenant, account, asset, balance, held FROM balances WHERE tenant = ANY($1)",
                              tenants)
    entries = await db.fetch("SELECT tenant, account, asset, log_offset, leg, transaction_id, amount, balance_after "
                             "FROM entries WHERE tenant = ANY($1)", tenants)
    keys = await db.fetch("SELECT tenant, key, transaction_id FROM idempotency_keys WHERE tenant = ANY($1)", tenants)
    return {
        "transactions": {(r["tenant"], r["id"]): (r["status"], r["reason"], r["log_partition"], r["log_offset"],
                                                  r["has_error"]) for r in tx},
        "balances": {(r["tenant"], r["account"], r["asset"]): r["balance"] for r in balances},
        "held": {(r["tenant"], r["account"], r["asset"]): r["held"] for r in balances if r["held"]},
        "entries": sorted(tuple(r) for r in entries),
        "keys": sorted(tuple(r) for r in keys),
    }


def _expected(rows: BatchRows) -> dict[str, Any]:
    return {
        "transactions": {(t[0], t[1]): (t[2], t[3], t[9], t[10], t[13] is not None) for t in rows.transactions},
        "balances": {k: v[0] for k, v in rows.balances.items()},
        "held": {k: v[1] for k, v in rows.balances.items() if v[1]},
        "entries": sorted(e[:8] for e in rows.entries),
        "keys": sorted(rows.idempotency_keys),
    }


def fold(tenants: list[str], records: list[Record]) -> BatchRows:
    """The pure fold of `records`, the tenants created beforehand (through the API, on the log)."""
    return fold_batch(Ledger(tenants=dict.fromkeys(tenants, True)), records,
                      decode_all(records, SETTINGS.topic_partitions), BatchRows(positions=position_key()))


async def _register(w: World, tenants: list[str]) -> dict[str, httpx.AsyncClient]:
    assert w.http is not None
    clients = {}
    for t in tenants:
        assert (await w.http.post("/v1/tenants", json={"id": t})).status_code == 201
        key = (await w.http.post(f"/v1/tenants/{t}/keys", json={"scopes": ["read"]})).json()["key"]
        clients[t] = httpx.AsyncClient(base_url=w.stack.api_url, headers={"Authorization": f"Bearer {key}"})
    return clients


async def _walk_pages(client: httpx.AsyncClient, tenant: str, account: str) -> list[tuple[str, str, int, int]]:
    seen: list[tuple[str, str, int, int]] = []
    cursor = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/tenants/{tenant}/accounts/{account}/entries", params=params)).json()
        seen += [(e["transaction_id"], e["asset"], e["amount"], e["balance_after"]) for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pages never ended")


async def _check_history(w: World, history: list[dict[str, Any]]) -> None:
    assert w.db is not None
    tenants = [unique("p"), unique("p")]
    clients = await _register(w, tenants)
    try:
        records, model = await _produce(w, history, tenants)
        await _wait_applied(w, records)
        rows = fold(tenants, records)
        stored = await _stored(w.db, tenants)
        assert stored == _expected(rows)
        # Both against the model written apart from the fold: every decision recorded, and the balances.
        assert {k: v[:2] for k, v in stored["transactions"].items()} == model.rows
        assert stored["balances"] == model.balances | {k: 0 for k in stored["balances"] if k not in model.balances}
        assert stored["held"] == {k: v for k, v in model.held.items() if v}

        # Outcomes: every decision published (at least once), exactly as the fold decided it.
        expected_outcomes = {bytes(v) for _, _, v in rows.outcomes}
        positions = {r.position.raw() for r in records}
        for _ in range(200):
            # Each outcome names the record it answers (a replay's `position` is its original's).
            seen = {orjson.dumps(o) for o in w.seen_outcomes if o["record"] in positions}
            if expected_outcomes <= seen:
                break
            await asyncio.sleep(0.05)
        # Every record answered (an atomic batch once per transfer in it).
        assert {orjson.loads(value)["record"] for _, _, value in rows.outcomes} == positions
        assert expected_outcomes == seen

        # Double entry, and no customer's available balance below minus its overdraft limit (0 unless set).
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for (tenant, account, asset), (balance, held, limit, *_) in rows.balances.items():
            sums[(tenant, asset)] += balance
            assert balance - held >= -limit or is_system(account)
        assert all(total == 0 for total in sums.values())

        for tenant in tenants:
            # History pages walked to the end list each entry once, newest first, with consistent balances.
            expected_entries = sorted((e for e in rows.entries if e[0] == tenant and e[1] == "a"),
                                      key=lambda e: (e[3], e[4]), reverse=True)
            walked = await _walk_pages(clients[tenant], tenant, "a")
            assert walked == [(e[5], e[2], e[6], e[7]) for e in expected_entries]
            # ?at= agrees with the fold over the records up to that time.
            mine = [r for r in records if r.key == tenant.encode()]
            if mine:
                cut = mine[len(mine) // 2]
                prefix = [r for r in records if r.timestamp_ms <= cut.timestamp_ms]
                upto = fold(tenants, prefix)
                # As of a time, from the history: a row only a hold or a policy touched has no entries.
                moved = {e[2] for e in upto.entries if e[0] == tenant and e[1] == "a"}
                want = {k[2]: v[0] for k, v in upto.balances.items()
                        if k[0] == tenant and k[1] == "a" and k[2] in moved}
                at = cut.time.isoformat(timespec="milliseconds")
                got = (await clients[tenant].get(f"/v1/tenants/{tenant}/accounts/a", params={"at": at})).json()
                assert got["balances"] == want
        w.records += len(records)
        w.histories += 1
    finally:
        for client in clients.values():
            await client.aclose()


# Shrinking replays against real services and takes minutes: a failure is reported as generated.
@settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(history=histories)
def test_projection_equals_the_fold_of_the_log(world: World, history: list[dict[str, Any]]) -> None:
    world.runner.run(_check_history(world, history))


# Every kind of event at least once: deposits, an overdraft, overflow, a repeated key with the same and with
# another body, a reused id, and each malformed shape.
FIXED_HISTORY: list[dict[str, Any]] = [
    {"kind": "tx", "tenant": 0, "postings": [("@world", "a", 100, "USD/2")], "key": "k1", "reuse_id": 9},
    {"kind": "tx", "tenant": 0, "postings": [("a", "b", 101, "USD/2")], "key": None, "reuse_id": 9},
    {"kind": "tx", "tenant": 0, "postings": [("@world", "a", 100, "USD/2")], "key": "k1", "reuse_id": 9},
    {"kind": "tx", "tenant": 0, "postings": [("@world", "a", 7, "USD/2")], "key": "k1", "reuse_id": 9},
    {"kind": "tx", "tenant": 0, "postings": [("@world", "c", 3, "USD/2")], "key": None, "reuse_id": 0},
    {"kind": "tx", "tenant": 1, "postings": [("@world", "a", HUGE, "EUR/2"), ("@fees", "a", 1, "EUR/2")],
     "key": None, "reuse_id": 9},
    *({"kind": "bad", "tenant": 1, "shape": shape}
      for shape in ("not_json", "float_amount", "foreign_key", "no_postings", "self_posting")),
]


def test_a_fixed_history_of_every_kind_checks_out(world: World) -> None:
    """The checker itself runs end to end on a known history (the generated ones may all be small)."""
    before = world.histories
    world.runner.run(_check_history(world, FIXED_HISTORY))
    assert world.histories == before + 1


async def _replay_and_compare(stack: Stack) -> int:
    base = os.environ["LEDGER_DATABASE_URL"]
    name = f"ledger_replay_{unique('r').replace('-', '_')}"
    replay_url = base.rsplit("/", 1)[0] + f"/{name}"
    await migrate(replay_url)
    live = await asyncpg.connect(base)
    fresh = await asyncpg.connect(replay_url)
    for conn in (live, fresh):
        await conn.execute("SELECT ledger_use_live()")
    try:
        applied = {r["log_partition"]: r["next_offset"] for r in await live.fetch(
            "SELECT log_partition, next_offset FROM projection_offsets")}
        stats = await replay(lambda: asyncpg.connect(replay_url), SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC,
                             "proj_v1", until=applied)
        queries = [
            "SELECT tenant, id, status, reason, postings::text, metadata::text, reference, idempotency_key, "
            "fingerprint, log_partition, log_offset, created_at, committed_at, error, kind, target, reversed "
            "FROM transactions ORDER BY 1, 2",
            "SELECT * FROM balances ORDER BY 1, 2, 3",
            "SELECT * FROM entries ORDER BY 1, 2, 4, 5",
            "SELECT * FROM idempotency_keys ORDER BY 1, 2",
            "SELECT * FROM invalid_events ORDER BY 1, 2",
            "SELECT * FROM tenants ORDER BY 1",
            "SELECT * FROM replays ORDER BY 1, 2",
            "SELECT * FROM holds ORDER BY 1, 2",
            "SELECT * FROM accounts ORDER BY 1, 2",
            "SELECT topic, log_partition, next_offset FROM projection_offsets ORDER BY 1, 2",
        ]
        for query in queries:
            assert [tuple(r) for r in await fresh.fetch(query)] == [tuple(r) for r in await live.fetch(query)], query
        return stats.records
    finally:
        await live.close()
        await fresh.close()
        admin = await asyncpg.connect(base.rsplit("/", 1)[0] + "/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


def test_replaying_the_log_into_an_empty_database_reproduces_the_projection(world: World) -> None:
    world.runner.run(_check_history(world, FIXED_HISTORY))  # whatever ran before, there is a history to replay
    replayed = world.runner.run(_replay_and_compare(world.stack))
    assert replayed >= world.records >= len(FIXED_HISTORY)
