"""Queries: transactions by filter, accounts by prefix, sums by prefix (contract v2, "Queries")."""

from __future__ import annotations

from typing import Any

from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import funded


async def page(tenant: Tenant, path: str, **params: Any) -> dict[str, Any]:
    response = await tenant.client.get(tenant.path(path), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_transactions_by_filter_newest_first_in_keyset_pages(tenant: Tenant) -> None:
    await funded(tenant, 100)
    made = []
    for i in range(5):
        made.append((await transfer(tenant.client, tenant.id, posting("alice", f"shop-{i % 2}", 1),
                                    reference=f"order-{i}", metadata={"channel": "web" if i % 2 else "app"})).json())
    rejected = (await transfer(tenant.client, tenant.id, posting("bob", "alice", 5))).json()["transaction"]
    everything = await page(tenant, "/transactions", limit=3)
    assert [t["id"] for t in everything["transactions"]] == [rejected["id"], made[4]["id"], made[3]["id"]]
    rest = await page(tenant, "/transactions", limit=3, cursor=everything["next_cursor"])
    assert [t["id"] for t in rest["transactions"]] == [made[2]["id"], made[1]["id"], made[0]["id"]]
    last = await page(tenant, "/transactions", limit=3, cursor=rest["next_cursor"])
    assert len(last["transactions"]) == 1 and last["next_cursor"] is None  # the deposit
    assert [t["id"] for t in (await page(tenant, "/transactions", account="shop-1"))["transactions"]] == \
        [made[3]["id"], made[1]["id"]]
    assert [t["id"] for t in (await page(tenant, "/transactions", reference="order-2"))["transactions"]] == \
        [made[2]["id"]]
    assert [t["id"] for t in (await page(tenant, "/transactions", status="rejected"))["transactions"]] == \
        [rejected["id"]]
    web = await page(tenant, "/transactions", **{"metadata.channel": "web"})
    assert [t["id"] for t in web["transactions"]] == [made[3]["id"], made[1]["id"]]
    both = await page(tenant, "/transactions", account="shop-0", **{"metadata.channel": "app"})
    assert [t["id"] for t in both["transactions"]] == [made[4]["id"], made[2]["id"], made[0]["id"]]
    since = made[2]["created_at"]
    assert [t["id"] for t in (await page(tenant, "/transactions", since=since, until=made[3]["created_at"],
                                         status="committed"))["transactions"]][-1] == made[2]["id"]


async def test_accounts_and_sums_by_prefix(tenant: Tenant) -> None:
    await funded(tenant, 100)
    for i in range(4):
        assert (await transfer(tenant.client, tenant.id, posting("alice", f"user:{i}", 10 + i))).status_code == 201
    first = await page(tenant, "/accounts", prefix="user:", limit=3)
    assert [a["address"] for a in first["accounts"]] == ["user:0", "user:1", "user:2"]
    assert first["accounts"][1]["balances"] == {"USD/2": 11} and first["accounts"][1]["available"] == {"USD/2": 11}
    second = await page(tenant, "/accounts", prefix="user:", limit=3, cursor=first["next_cursor"])
    assert [a["address"] for a in second["accounts"]] == ["user:3"] and second["next_cursor"] is None
    sums = await page(tenant, "/balances", prefix="user:")
    assert sums == {"prefix": "user:", "balances": {"USD/2": 46}, "accounts": 4}
    everyone = await page(tenant, "/balances")
    assert everyone["balances"] == {"USD/2": 0}  # double entry: @world included


async def test_bad_query_parameters_are_4xx(tenant: Tenant) -> None:
    for params in ({"status": "maybe"}, {"account": "bad address"}, {"since": "yesterday"}, {"limit": 501},
                   {"cursor": "%%%"}, {"cursor": "YWJj"}, {"nope": 1}, {"metadata.k": "\u0000"},
                   {"reference": "x" * 256}):
        assert (await tenant.client.get(tenant.path("/transactions"), params=params)).status_code == 422, params
    for params in ({"prefix": "bad prefix"}, {"prefix": "é"}, {"cursor": "%%%"}, {"limit": 0}):
        assert (await tenant.client.get(tenant.path("/accounts"), params=params)).status_code == 422, params
    # A cursor of one listing is refused by another.
    await funded(tenant, 3)
    for i in range(2):
        await transfer(tenant.client, tenant.id, posting("alice", f"x{i}", 1))
    tx_cursor = (await page(tenant, "/transactions", limit=1))["next_cursor"]
    account_cursor = (await page(tenant, "/accounts", limit=1))["next_cursor"]
    entries_cursor = (await page(tenant, "/accounts/alice/entries", limit=1))["next_cursor"]
    assert None not in (tx_cursor, account_cursor, entries_cursor)
    for path, cursor in (("/accounts", tx_cursor), ("/accounts", entries_cursor), ("/transactions", account_cursor),
                         ("/transactions", entries_cursor), ("/accounts/alice/entries", tx_cursor)):
        assert (await tenant.client.get(tenant.path(path), params={"cursor": cursor})).status_code == 422, path
    assert (await tenant.client.get(tenant.path("/balances"), params={"prefix": "x" * 129})).status_code == 422
