"""Holds and reversals over HTTP and straight through Kafka (contract v2, "wallet operations")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from client import LedgerProducer
from ledger.requests import Posting
from tests.conftest import Tenant, create_tenant
from tests.e2e.helpers import posting, transfer
from tests.stack import SETTINGS, Stack


async def post(tenant: Tenant, path: str, body: dict[str, Any] | None = None, wait: bool = True,
               key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await tenant.client.post(tenant.path(path), params={"wait": str(wait).lower()}, json=body,
                                    headers=headers)


async def account(tenant: Tenant, address: str, min_position: str | None = None) -> dict[str, Any]:
    params = {"min_position": min_position} if min_position else {}
    response = await tenant.client.get(tenant.path(f"/accounts/{address}"), params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def funded(tenant: Tenant, amount: int = 100) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", amount))).status_code == 201


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_a_hold_shows_as_held_and_available_and_closes_once(tenant: Tenant) -> None:
    await funded(tenant)
    held = await post(tenant, "/holds", {"postings": [posting("alice", "shop", 70)], "expires_in_s": 600})
    assert held.status_code == 201, held.text
    hold = held.json()
    assert (hold["status"], hold["postings"][0]["amount"]) == ("held", 70) and hold["expires_at"]
    body = await account(tenant, "alice")
    assert (body["balances"], body["held"], body["available"]) == ({"USD/2": 100}, {"USD/2": 70}, {"USD/2": 30})
    assert code(await transfer(tenant.client, tenant.id, posting("alice", "bob", 31))) == (409, "insufficient_funds")
    captured = await post(tenant, f"/holds/{hold['id']}/capture", {"amount": 50})
    assert captured.status_code == 201, captured.text
    assert (captured.json()["captures"], captured.json()["postings"][0]["amount"]) == (hold["id"], 50)
    assert code(await post(tenant, f"/holds/{hold['id']}/capture")) == (409, "hold_closed")
    assert code(await post(tenant, f"/holds/{hold['id']}/void")) == (409, "hold_closed")
    state = (await tenant.client.get(tenant.path(f"/holds/{hold['id']}"))).json()
    assert (state["status"], state["closed_by"]) == ("captured", captured.json()["id"])
    body = await account(tenant, "alice")
    assert (body["balances"], body["held"], body["available"]) == ({"USD/2": 50}, {"USD/2": 0}, {"USD/2": 50})
    assert (await account(tenant, "shop"))["balances"] == {"USD/2": 50}


async def test_errors_of_holds(tenant: Tenant) -> None:
    await funded(tenant)
    assert code(await post(tenant, "/holds", {"postings": [posting("alice", "shop", 101)]})) \
        == (409, "insufficient_funds")
    one = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]})).json()
    assert code(await post(tenant, f"/holds/{one['id']}/capture", {"amount": 11})) == (409, "amount_exceeds_hold")
    assert code(await post(tenant, "/holds/no-such-hold/capture")) == (404, "not_found")
    assert code(await post(tenant, "/holds/no-such-hold/void")) == (404, "not_found")
    assert (await tenant.client.get(tenant.path("/holds/no-such-hold"))).status_code == 404
    for bad in ({"postings": [posting("alice", "shop", 1)], "expires_in_s": 0},
                {"postings": [posting("alice", "shop", 1)], "expires_in_s": 2592001},
                {"postings": [posting("alice", "shop", 1)], "amount": 1}):
        assert (await post(tenant, "/holds", bad)).status_code == 422, bad
    for bad_body in ({"amount": 0}, {"amount": 1.5}, {"amount": "1"}, {"hold": "x"}):
        assert (await post(tenant, f"/holds/{one['id']}/capture", bad_body)).status_code == 422, bad_body
    voided = await post(tenant, f"/holds/{one['id']}/void")
    assert (voided.status_code, voided.json()["status"]) == (201, "voided")
    assert (await account(tenant, "alice"))["available"] == {"USD/2": 100}


async def test_without_wait_every_operation_is_202_and_then_decided(tenant: Tenant) -> None:
    await funded(tenant)
    pending = await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]}, wait=False)
    assert (pending.status_code, pending.json()["status"]) == (202, "pending")
    hold_id = pending.json()["id"]
    void = await post(tenant, f"/holds/{hold_id}/void", wait=False)
    assert void.status_code == 202
    state = await tenant.client.get(tenant.path(f"/holds/{hold_id}"),
                                    params={"min_position": void.json()["position"], "timeout_ms": 5000})
    assert state.json()["status"] == "voided"
    missing = await post(tenant, "/holds/no-such-hold/void", wait=False)
    assert missing.status_code == 202  # decided later: rejected, not_found
    got = await tenant.client.get(tenant.path(f"/transactions/{missing.json()['id']}"),
                                  params={"min_position": missing.json()["position"], "timeout_ms": 5000})
    assert (got.json()["status"], got.json()["reason"]) == ("rejected", "not_found")


async def test_a_repeated_capture_key_replays_the_capture(tenant: Tenant) -> None:
    await funded(tenant)
    hold_id = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]})).json()["id"]
    first = await post(tenant, f"/holds/{hold_id}/capture", key="cap-1")
    again = await post(tenant, f"/holds/{hold_id}/capture", key="cap-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    assert (await account(tenant, "shop"))["balances"] == {"USD/2": 10}


async def test_another_tenants_hold_or_transaction_does_not_exist(admin: httpx.AsyncClient, stack: Stack,
                                                                  tenant: Tenant) -> None:
    await funded(tenant)
    hold_id = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]})).json()["id"]
    tx_id = (await transfer(tenant.client, tenant.id, posting("alice", "bob", 5))).json()["id"]
    other = await create_tenant(admin, stack)
    try:
        assert code(await post(other, f"/holds/{hold_id}/capture")) == (404, "not_found")
        assert code(await post(other, f"/holds/{hold_id}/void")) == (404, "not_found")
        assert code(await post(other, f"/transactions/{tx_id}/reverse")) == (404, "not_found")
        assert (await other.client.get(other.path(f"/holds/{hold_id}"))).status_code == 404
    finally:
        await other.client.aclose()
    assert (await tenant.client.get(tenant.path(f"/holds/{hold_id}"))).json()["status"] == "held"


async def test_reversals_in_parts_up_to_the_original(tenant: Tenant) -> None:
    await funded(tenant)
    tx_id = (await transfer(tenant.client, tenant.id, posting("alice", "bob", 60))).json()["id"]
    part = await post(tenant, f"/transactions/{tx_id}/reverse", {"amount": 20})
    assert part.status_code == 201, part.text
    assert (part.json()["reverses"], part.json()["postings"]) == (tx_id, [posting("bob", "alice", 20)])
    assert code(await post(tenant, f"/transactions/{tx_id}/reverse", {"amount": 41})) \
        == (409, "amount_exceeds_remaining")
    rest = await post(tenant, f"/transactions/{tx_id}/reverse")
    assert rest.json()["postings"] == [posting("bob", "alice", 40)]
    assert code(await post(tenant, f"/transactions/{tx_id}/reverse")) == (409, "not_reversible")
    original = (await tenant.client.get(tenant.path(f"/transactions/{tx_id}"))).json()
    assert original["reversed"] == 60
    assert (await account(tenant, "bob"))["balances"] == {"USD/2": 0}
    spent = (await transfer(tenant.client, tenant.id, posting("alice", "carol", 100))).json()["id"]
    await transfer(tenant.client, tenant.id, posting("carol", "dave", 100))
    assert code(await post(tenant, f"/transactions/{spent}/reverse")) == (409, "insufficient_funds")
    rejected = await transfer(tenant.client, tenant.id, posting("alice", "carol", 10**6))
    assert code(await post(tenant, f"/transactions/{rejected.json()['transaction']['id']}/reverse")) \
        == (409, "not_reversible")


async def test_an_expired_holds_funds_are_available_within_two_seconds(tenant: Tenant) -> None:
    await funded(tenant)
    hold = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 80)], "expires_in_s": 1})).json()
    assert (await account(tenant, "alice"))["available"] == {"USD/2": 20}
    started = time.monotonic()
    while (await account(tenant, "alice"))["available"] != {"USD/2": 100}:
        assert time.monotonic() - started < 3.0, "the hold's funds did not come back in time"
        await asyncio.sleep(0.05)
    # Its expiry comes within 2 s of expires_at (1 s after it was placed), with nothing else appended.
    assert time.monotonic() - started < 3.0
    state = (await tenant.client.get(tenant.path(f"/holds/{hold['id']}"))).json()
    assert state["status"] == "expired"
    assert code(await post(tenant, f"/holds/{hold['id']}/capture")) == (409, "hold_expired")
    assert code(await post(tenant, f"/holds/{hold['id']}/void")) == (409, "hold_closed")


async def test_fifty_clients_capturing_and_voiding_the_same_holds_close_each_once(tenant: Tenant) -> None:
    await funded(tenant, 1000)
    holds = [(await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]})).json()["id"]
             for _ in range(5)]

    async def close(n: int) -> httpx.Response:
        hold_id = holds[n % len(holds)]
        return await post(tenant, f"/holds/{hold_id}/{'capture' if n % 2 else 'void'}")

    answers = await asyncio.gather(*(close(n) for n in range(50)))
    won = [a for a in answers if a.status_code == 201]
    assert len(won) == len(holds), [a.text for a in answers if a.status_code != 409]
    assert all(code(a) == (409, "hold_closed") for a in answers if a.status_code != 201)
    captures = sum(1 for a in won if "captures" in a.json())
    body = await account(tenant, "shop")
    assert body["balances"].get("USD/2", 0) == 10 * captures
    assert (await account(tenant, "alice"))["held"] == {"USD/2": 0}


async def test_holds_and_reversals_straight_through_kafka(tenant: Tenant) -> None:
    await funded(tenant)
    async with LedgerProducer(SETTINGS.kafka_bootstrap, topic=SETTINGS.transactions_topic,
                              outcomes_topic=SETTINGS.outcomes_topic, position_key=SETTINGS.position_key) as ledger:
        held = await ledger.hold(tenant.id, [Posting("alice", "shop", 30, "USD/2")], expires_in_s=600)
        assert (await ledger.outcome(held, 30))["status"] == "committed"
        captured = await ledger.capture(tenant.id, held.id, amount=30)
        assert (await ledger.outcome(captured, 30))["status"] == "committed"
        again = await ledger.void(tenant.id, held.id)
        assert ((await ledger.outcome(again, 30))["reason"]) == "hold_closed"
        reversed_ = await ledger.reverse(tenant.id, captured.id, amount=10)
        assert (await ledger.outcome(reversed_, 30))["status"] == "committed"
    body = await account(tenant, "shop", min_position=reversed_.token)
    assert (body["balances"], (await account(tenant, "alice"))["available"]) == ({"USD/2": 20}, {"USD/2": 80})
