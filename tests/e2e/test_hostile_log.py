"""A hostile log: thousands of records produced straight to Kafka, valid transfers mixed with everything a
careless or malicious producer can write. The projector must stay up, decide every record, keep every
tenant's books balanced, and `ledger verify` must find the projection exactly what the log says.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from ledger.batch import ANSWER_HEADER
from ledger.placement import partition_for
from ledger.positions import Position
from ops.verify import verify
from tests.conftest import create_tenant
from tests.e2e.helpers import outcomes_reader
from tests.stack import SETTINGS, TRANSACTIONS_TOPIC, Stack, unique

SEED = 20261128
RECORDS = 3000
DEADLINE_S = 60.0
ACCOUNTS = ["@world", "@fees", "alice", "bob", "carol"]
TICK = b'{"v":1,"kind":"tick"}'
ANSWER_MARKS: list[list[tuple[str, bytes]] | None] = [
    None, None, [(ANSWER_HEADER, b"1")], [(ANSWER_HEADER, b"1"), (ANSWER_HEADER, b"1")], [(ANSWER_HEADER, b"")],
    [(ANSWER_HEADER, b"\x00" * 4096)], [("other", b"1"), (ANSWER_HEADER, b"1")]]


class Hostile:
    """Makes records, remembering ids and keys already used so that later records can reuse them."""

    def __init__(self, rng: random.Random, tenants: list[str], partitions: int) -> None:
        self.rng = rng
        self.tenants = tenants
        self.partitions = partitions
        self.ids: list[tuple[str, str]] = []
        self.holds: list[tuple[str, str]] = []
        self.keyed: list[dict[str, Any]] = []  # keyed batches made, to repeat
        self.monitors: list[tuple[str, str]] = []  # (tenant, id) of monitor records made, to remove
        self.kinds: dict[str, int] = {}

    def transfer(self, tenant: str, **overrides: Any) -> dict[str, Any]:
        rng = self.rng
        source, destination = rng.sample(ACCOUNTS, 2)
        amount = rng.choice([rng.randint(1, 1000), rng.randint(1, 1000), 2**62, 2**63 - 1])
        body: dict[str, Any] = {"v": 1, "id": unique("h"), "tenant": tenant, "postings": [
            {"source": source, "destination": destination, "amount": amount, "asset": rng.choice(["USD/2", "PTS"])}]}
        if rng.random() < 0.3:
            body["idempotency_key"] = f"k{rng.randint(0, 20)}"
        body.update(overrides)
        return body

    def reused_id(self) -> tuple[str, str] | None:
        return self.rng.choice(self.ids) if self.ids else None

    def make(self) -> tuple[bytes | None, bytes | None, int | None]:
        """(key, value, explicit partition or None for the default partitioner)."""
        rng = self.rng
        tenant = rng.choice(self.tenants)
        kind = rng.choice(["valid"] * 8 + ["taken_id", "bytes", "json", "nul", "surrogate", "numbers",
                                            "wrong_partition", "unknown_tenant", "tenant_record", "bad_key",
                                            "no_value", "kind"]
                          + ["hold", "close_hold", "reverse", "policy", "batch"] * 2 + ["tick"]
                          + ["repeated_key", "dots", "keyed_batch", "monitor", "unmonitor"])
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        key: bytes | None = tenant.encode()
        partition = None
        value: bytes | None
        if kind == "valid":
            value = orjson.dumps(self.transfer(tenant))
        elif kind == "taken_id":
            taken = self.reused_id()
            body = self.transfer(taken[0] if taken else tenant)
            if taken:
                key, body["id"] = taken[0].encode(), taken[1]
            if rng.random() < 0.5:
                body["postings"] = "garbage"  # an invalid record whose id is taken
            value = orjson.dumps(body)
        elif kind == "bytes":
            value = rng.randbytes(rng.randint(0, 200))
        elif kind == "json":
            value = orjson.dumps(rng.choice([None, 1, -1.5, "s", [], [1, {"a": None}], {"v": 1}, {"id": 5},
                                             {"v": 1, "id": "x", "tenant": tenant, "postings": [None]}, True]))
        elif kind == "nul":
            field = rng.choice(["metadata_value", "metadata_key", "reference", "idempotency_key", "id"])
            body = self.transfer(tenant)
            if field == "metadata_value":
                body["metadata"] = {"n": "a\u0000b"}
            elif field == "metadata_key":
                body["metadata"] = {"a\u0000": "b"}
            elif field == "reference":
                body["reference"] = "\u0000"
            elif field == "idempotency_key":
                body["idempotency_key"] = "k\u0000"
            else:
                body["id"] = "id\u0000"
            value = orjson.dumps(body)
        elif kind == "surrogate":
            raw = orjson.dumps(self.transfer(tenant, metadata={"m": "SURROGATE"}))
            value = raw.replace(b"SURROGATE", rng.choice([b"\\ud800", b"\\udfff\\ud800", b"\xed\xa0\x80", b"\xff"]))
        elif kind == "numbers":
            raw = orjson.dumps(self.transfer(tenant, postings=[
                {"source": "@world", "destination": "alice", "amount": 1, "asset": "USD/2"}]))
            value = raw.replace(b'"amount":1', b'"amount":' + rng.choice(
                [b"18446744073709551616", b"-5", b"0", b"1.0", b"1e400", b"-9223372036854775809", b'"10"', b"null"]))
        elif kind == "wrong_partition":
            value = orjson.dumps(self.transfer(tenant))
            partition = (partition_for(key, self.partitions) + rng.randint(1, self.partitions - 1)) % self.partitions
        elif kind == "unknown_tenant":
            stranger = unique("nobody")
            key, value = stranger.encode(), orjson.dumps(self.transfer(stranger))
        elif kind == "tenant_record":
            name = rng.choice([tenant, "n\u0000", "x" * 300, 5])
            value = orjson.dumps({"v": 1, "kind": "tenant", "id": unique("c"), "tenant": tenant, "name": name})
        elif kind == "bad_key":
            key = rng.choice([None, b"", rng.randbytes(8), b"UPPER", b"\x00"])
            value = orjson.dumps(self.transfer(tenant))
        elif kind == "no_value":
            value = None
        elif kind == "hold":
            body = self.transfer(tenant, kind="hold")
            body["expires_in_s"] = rng.choice([1, 2, 600, 0, -1, 2**40, "60", None])
            value = orjson.dumps(body)
            self.holds.append((tenant, body["id"]))
        elif kind in ("close_hold", "reverse"):
            # Targets: ids that exist (holds, transactions, of this tenant or another), or not, or garbage.
            taken = rng.choice(self.holds) if kind == "close_hold" and self.holds else self.reused_id()
            target = rng.choice([taken[1] if taken else "none", "none", "x\u0000", 5, None, "a" * 65])
            op = rng.choice(["capture", "void"]) if kind == "close_hold" else "reverse"
            body = {"v": 1, "kind": op, "id": unique("o"), "tenant": tenant,
                    "hold" if op != "reverse" else "transaction": target}
            if op != "void" and rng.random() < 0.5:
                body["amount"] = rng.choice([1, 5, 10**6, 0, -1, 2**63, 1.5])
            value = orjson.dumps(body)
        elif kind == "policy":
            body = {"v": 1, "kind": "policy", "id": unique("p"), "tenant": tenant,
                    "account": rng.choice([*ACCOUNTS, "x\u0000", "", 7]),
                    "overdraft_limit": rng.choice([{}, {"USD/2": rng.randint(0, 500)}, {"USD/2": -1}, {"usd": 1},
                                                   {"PTS": 2**63}, None]),
                    "frozen": rng.choice([False, False, True, "yes", None])}
            value = orjson.dumps(body)
        elif kind == "monitor":  # bounds at and past int64's edges, of the wrong type, absent; accounts of every sort
            monitor_id = rng.choice([unique("m"), *(i for _, i in self.ids[-3:])])  # sometimes an id already taken
            body = {"v": 1, "kind": "monitor", "id": monitor_id, "tenant": tenant,
                    "account": rng.choice([*ACCOUNTS, "@world", "x\u0000", "", 7]),
                    "asset": rng.choice(["USD/2", "PTS", "usd"])}
            for bound in ("below", "above"):
                if rng.random() < 0.7:
                    body[bound] = rng.choice([rng.randint(-10, 1000), 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 1.5,
                                              "5", True, None])
            self.monitors.append((tenant, monitor_id))
            value = orjson.dumps(body)
        elif kind == "unmonitor":  # its own monitors, another tenant's, unknown ones, and repeats
            target = rng.choice(self.monitors) if self.monitors and rng.random() < 0.8 else (tenant, unique("m"))
            value = orjson.dumps({"v": 1, "kind": "unmonitor", "id": unique("u"), "tenant": tenant,
                                  "monitor": target[1]})
        elif kind == "batch":
            items = [{k: v for k, v in self.transfer(tenant).items() if k in ("id", "postings", "idempotency_key")}
                     for _ in range(rng.randint(0, 4))]
            if items and rng.random() < 0.3:
                items.append(dict(items[0]))  # an id twice in one batch
            if items and rng.random() < 0.2:
                items[-1]["postings"] = [{"source": "alice", "destination": "alice", "amount": 1, "asset": "X"}]
            value = orjson.dumps({"v": 1, "kind": "batch", "id": unique("b"), "tenant": tenant, "transactions": items})
            for item in items:
                self.ids.append((tenant, str(item["id"])))
        elif kind == "repeated_key":  # a JSON object naming a field twice: which one counts is ambiguous
            raw = orjson.dumps(self.transfer(tenant))
            value = raw.replace(b'"amount":', b'"amount":1,"amount":', 1)
        elif kind == "dots":
            body = self.transfer(tenant)
            body["postings"][0][rng.choice(["source", "destination"])] = rng.choice([".", "..", "..."])
            value = orjson.dumps(body)
        elif kind == "keyed_batch":  # true repeats (new ids, same body), conflicts under a few keys, taken ids
            if self.keyed and rng.random() < 0.5:
                body = dict(rng.choice(self.keyed))
                items = [{**item, "id": unique("h")} for item in body["transactions"]]
                body.update(transactions=items, id=body["id"] if rng.random() < 0.1 else unique("kb"))
            else:
                items = [{k: v for k, v in self.transfer(tenant).items() if k in ("id", "postings")}
                         for _ in range(rng.randint(1, 3))]
                body = {"v": 1, "kind": "batch", "id": unique("kb"), "tenant": tenant, "transactions": items,
                        "idempotency_key": f"bk{rng.randint(0, 3)}", "atomic": rng.random() < 0.5}
                self.keyed.append(body)
            value = orjson.dumps(body)
            for item in items:
                self.ids.append((tenant, str(item["id"])))
        elif kind == "tick":
            key, value, partition = None, TICK, rng.randrange(self.partitions)
        else:
            value = orjson.dumps(self.transfer(tenant, kind=rng.choice(["hold", "", "TRANSFER", ["transfer"]])))
        if key is not None and value is not None:
            try:
                identity = orjson.loads(value)
                if isinstance(identity, dict) and isinstance(identity.get("id"), str):
                    self.ids.append((key.decode("utf-8", "replace"), identity["id"]))
            except orjson.JSONDecodeError:
                pass
        return key, value, partition


async def test_a_hostile_log_stops_nothing_and_every_record_is_decided(admin: httpx.AsyncClient, stack: Stack) -> None:
    started = time.monotonic()
    tenants = [await create_tenant(admin, stack) for _ in range(3)]
    for t in tenants:
        await t.client.aclose()
    hostile = Hostile(random.Random(SEED), [t.id for t in tenants], SETTINGS.topic_partitions)
    marks = random.Random(SEED + 1)  # apart: the records are the same as without the marks
    positions: set[str] = set()
    seen: set[str] = set()
    consumer, reader = await outcomes_reader(seen)
    producer = AIOKafkaProducer(bootstrap_servers=SETTINGS.kafka_bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sent, ticks = [], []
        for _ in range(RECORDS):
            key, value, partition = hostile.make()
            # The header the API puts on a waited write, on any record (the projector then builds and sends its
            # answer), as anyone producing straight to Kafka can: once, twice, empty or long.
            mark = marks.choice(ANSWER_MARKS)
            future = await producer.send(TRANSACTIONS_TOPIC, value, key=key, partition=partition, headers=mark)
            (ticks if value == TICK else sent).append(future)
        # Every record but the clock's ticks (which carry only time) is answered by an outcome.
        positions.update(Position(m.partition, m.offset).raw() for m in await asyncio.gather(*sent))
        await asyncio.gather(*ticks)
        await stack.caught_up(timeout_s=DEADLINE_S)
        while not positions <= seen and time.monotonic() - started < DEADLINE_S:
            await asyncio.sleep(0.1)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    print(f"\nhostile log: {RECORDS} records, seed {SEED}, kinds {sorted(hostile.kinds.items())}, "
          f"{len(positions & seen)} outcomes, {time.monotonic() - started:.1f} s")
    assert stack.projector is not None and stack.projector.poll() is None, "the projector stopped"
    assert positions <= seen, f"{len(positions - seen)} records without an outcome"
    assert min(hostile.kinds.values()) > 0 and len(hostile.kinds) == 24
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC)
    assert verdict.identical, "\n".join(f"{check}: {rows}" for check, rows in verdict.differences.items())
    assert verdict.replayed >= RECORDS
