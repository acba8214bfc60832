"""Contract v3's statements and CSV export through the API: a period's opening, closing, debits, credits and
count; defaults; bad bounds; every entry as CSV without a page limit; `ledger verify` exact after them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from ops.verify import verify
from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import code
from tests.stack import SETTINGS, TRANSACTIONS_TOPIC


async def statement(tenant: Tenant, address: str, **params: str) -> dict[str, Any]:
    answer = await tenant.client.get(tenant.path(f"/accounts/{address}/statement"), params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_statement_of_a_period_adds_up(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 100))).status_code == 201
    await asyncio.sleep(0.05)
    middle = await transfer(tenant.client, tenant.id, posting("alice", "bob", 30))
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 7))).status_code == 201
    await asyncio.sleep(0.05)
    last = await transfer(tenant.client, tenant.id, posting("alice", "bob", 2))
    since = middle.json()["committed_at"]
    until = last.json()["committed_at"]
    body = await statement(tenant, "alice", asset="USD/2", **{"from": since, "until": until})
    assert {k: body[k] for k in ("opening", "closing", "debits", "credits", "count")} == \
        {"opening": 100, "closing": 77, "debits": 30, "credits": 7, "count": 2}
    assert body["opening"] + body["credits"] - body["debits"] == body["closing"]
    whole = await statement(tenant, "alice", asset="USD/2")  # the first entry to now
    assert {k: whole[k] for k in ("opening", "closing", "debits", "credits", "count")} == \
        {"opening": 0, "closing": 75, "debits": 32, "credits": 107, "count": 4}
    assert stamp(whole["from"]) <= stamp(since) <= stamp(whole["until"]) <= datetime.now(UTC)
    empty = await statement(tenant, "nobody", asset="USD/2")
    assert (empty["opening"], empty["closing"], empty["count"]) == (0, 0, 0)


async def test_bad_statements_are_422(tenant: Tenant) -> None:
    path = tenant.path("/accounts/alice/statement")
    for params in ({}, {"asset": "usd"}, {"asset": "USD/2", "from": "yesterday"},
                   {"asset": "USD/2", "from": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
                   {"asset": "USD/2", "limit": "5"}):
        assert code(await tenant.client.get(path, params=params)) == (422, "invalid_request"), params


async def test_every_entry_exports_as_csv_past_any_page_limit(tenant: Tenant) -> None:
    for n in range(3):
        body = {"transactions": [{"postings": [posting("@world", "alice", 1 + n * 400 + i)]} for i in range(400)]}
        answer = await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": "true"}, json=body)
        assert answer.status_code == 200, answer.text
    exported = await tenant.client.get(tenant.path("/accounts/alice/entries"), headers={"Accept": "text/csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0] == "transaction_id,asset,amount,balance_after,committed_at"
    assert len(lines) == 1 + 1200  # past the 500 a page of JSON may hold
    amounts = [int(line.split(",")[2]) for line in lines[1:]]
    assert amounts == list(range(1200, 0, -1))  # newest first, each once
    assert int(lines[1].split(",")[3]) == sum(range(1, 1201))
    paged = await tenant.client.get(tenant.path("/accounts/alice/entries"), params={"limit": "5"},
                                    headers={"Accept": "text/csv"})
    assert code(paged) == (422, "invalid_request")
    other = await tenant.client.get(tenant.path("/accounts/alice/entries"), params={"asset": "EUR/2"},
                                    headers={"Accept": "text/csv"})
    assert other.text.splitlines() == ["transaction_id,asset,amount,balance_after,committed_at"]
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC, [tenant.id])
    assert verdict.identical, verdict.differences


async def test_a_statements_defaults_never_cross_the_bound_given(tenant: Tenant) -> None:
    # Found by review: `from` in the future answered an `until` before it, and the other way round.
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 5))).status_code == 201
    future = await statement(tenant, "alice", asset="USD/2", **{"from": "2999-01-01T00:00:00Z"})
    past = await statement(tenant, "alice", asset="USD/2", until="2000-01-01T00:00:00Z")
    for body in (future, past):
        assert stamp(body["from"]) <= stamp(body["until"]), body
        assert (body["count"], body["credits"]) == (0, 0)
