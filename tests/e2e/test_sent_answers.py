"""A waited transfer is answered from what the projector sent with its progress notification (issue 24: no
read of PostgreSQL on the write path), and that answer is, byte for byte, the one PostgreSQL's rows give:
`GET .../transactions/{id}` shows the same JSON, keys in the same order."""

from __future__ import annotations

import os
import re

import asyncpg
import httpx
import orjson

from api.routes.common import transaction_body
from api.store import init_connection
from ledger.chain import CHAINED_KINDS
from tests.conftest import Tenant, live_projection
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import funded
from tests.stack import position_key


async def answers(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {m[0]: float(m[1]) for m in re.findall(r'^ledger_api_waited_answers_total\{source="(\w+)"\} (\S+)$',
                                                   text, re.M)}


async def shown(tenant: Tenant, id: str) -> bytes:
    read = await tenant.client.get(tenant.path(f"/transactions/{id}"))
    assert read.status_code == 200, read.text
    return read.content


async def test_a_waited_transfers_answer_is_what_its_rows_show(tenant: Tenant) -> None:
    await funded(tenant, 1_000)
    before = await answers(tenant.client)
    sent = [
        await transfer(tenant.client, tenant.id, posting("alice", "bob", 7)),
        await transfer(tenant.client, tenant.id, posting("alice", "bob", 3), posting("bob", "carol", 2),
                       posting("alice", "zoe", 1, "EUR/2") | {"source": "@world"}, key="order-17",
                       metadata={"zz": "last", "a": "first", "émoji": "✓", "mid": ""}, reference="ref-1"),
        await transfer(tenant.client, tenant.id, posting("alice", "bob", 10**6)),  # more than alice holds
    ]
    assert [s.status_code for s in sent] == [201, 201, 409], [s.text for s in sent]
    for answer in sent[:2]:
        given, read = answer.json(), orjson.loads(await shown(tenant, answer.json()["id"]))
        assert given == read
        # Byte for byte, key order included, but for `balances_after`'s accounts: a read of the transaction
        # lists them sorted, a waited answer in jsonb's order (shorter names first), as it did when it was read.
        after = given.pop("balances_after")
        assert orjson.dumps(given) == orjson.dumps({k: v for k, v in read.items() if k != "balances_after"})
        assert list(after) == sorted(after, key=lambda a: (len(a.encode()), a.encode()))
    refused = sent[2].json()["transaction"]
    assert orjson.dumps(refused) == await shown(tenant, refused["id"])
    # And byte for byte what a waited write answered when it read `api_transaction_answer` (issue 24's before).
    # A connection of its own: the API's jsonb codec set on one of the shared pool's would stay with it, and
    # change what later tests write through it.
    conn = await asyncpg.connect(os.environ["LEDGER_DATABASE_URL"])
    try:
        await live_projection(conn)
        await init_connection(conn)
        for body in (sent[0].json(), sent[1].json(), refused):
            row = await conn.fetchrow("SELECT * FROM api_transaction_answer($1, $2)", tenant.id, body["id"])
            link = row if row["hash"] is not None and row["kind"] in CHAINED_KINDS else None
            assert orjson.dumps(body) == orjson.dumps(transaction_body(row, position_key(), tenant.id,
                                                                       row["balances_after"] or {}, link))
    finally:
        await conn.close()
    assert list(sent[1].json()["metadata"]) == ["a", "zz", "mid", "émoji"]  # as jsonb keeps them
    after = await answers(tenant.client)
    given = {source: after.get(source, 0) - before.get(source, 0) for source in ("projector", "read")}
    # Each came one way or the other; a transfer applied before its request began waiting is read (rare).
    assert given["projector"] + given["read"] == 3 and given["projector"] >= 2, given


async def test_a_repeat_decided_in_flight_and_other_kinds_are_read_as_before(tenant: Tenant) -> None:
    await funded(tenant, 100)
    first = await transfer(tenant.client, tenant.id, posting("alice", "bob", 5), key="k-1")
    again = await transfer(tenant.client, tenant.id, posting("alice", "bob", 5), key="k-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    held = await tenant.client.post(tenant.path("/holds"), params={"wait": "true"},
                                    json={"postings": [posting("alice", "bob", 5)]})
    assert held.status_code == 201 and held.json()["status"] == "held"
