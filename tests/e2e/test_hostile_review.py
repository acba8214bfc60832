"""Issue 21's defects, attacked through the public API as the hostile review did: each answer is checked,
and the books after it (a retried batch pays once, no 500 at the int64 edges, `ledger verify` exact)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from client import LedgerProducer
from ledger.requests import Posting
from ops.verify import verify
from tests.conftest import Tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.test_holds import account, code, funded, post
from tests.stack import SETTINGS, TRANSACTIONS_TOPIC

MAX = 2**63 - 1


async def batch(tenant: Tenant, items: list[dict[str, Any]], key: str | None = None, atomic: bool = True,
                wait: bool = True) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await tenant.client.post(tenant.path("/transactions/batch"), params={"wait": str(wait).lower()},
                                    json={"transactions": items, "atomic": atomic}, headers=headers)


@pytest.mark.parametrize("atomic", [True, False])
async def test_1_a_retried_batch_moves_its_money_once(tenant: Tenant, atomic: bool) -> None:
    items = [{"postings": [posting("@world", "alice", 7)]}, {"postings": [posting("@world", "bob", 3)]}]
    first = await batch(tenant, items, key="pay-42", atomic=atomic)
    assert first.status_code == 200, first.text
    originals = [t["id"] for t in first.json()["transactions"]]
    for _ in range(2):
        again = await batch(tenant, items, key="pay-42", atomic=atomic)
        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert [t["id"] for t in again.json()["transactions"]] == originals
    unwaited = await batch(tenant, items, key="pay-42", atomic=atomic, wait=False)
    assert (unwaited.status_code, unwaited.headers.get("Idempotent-Replayed")) == (200, "true")
    other = await batch(tenant, items[:1], key="pay-42", atomic=atomic)
    assert code(other) == (409, "idempotency_conflict")
    last = await transfer(tenant.client, tenant.id, posting("@world", "carol", 1))
    alice = await account(tenant, "alice", min_position=last.json()["position"])
    assert (alice["balances"], (await account(tenant, "bob"))["balances"]) == ({"USD/2": 7}, {"USD/2": 3})


async def test_1_a_batch_key_and_a_single_requests_key_are_one_namespace(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="one")).status_code == 201
    assert code(await batch(tenant, [{"postings": [posting("@world", "alice", 5)]}], key="one")) == \
        (409, "idempotency_conflict")
    assert (await batch(tenant, [{"postings": [posting("@world", "alice", 5)]}], key="two")).status_code == 200
    assert code(await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="two")) == \
        (409, "idempotency_conflict")
    assert (await account(tenant, "alice"))["balances"] == {"USD/2": 10}


async def test_2_two_items_of_a_batch_with_one_key_are_refused_before_the_log(tenant: Tenant) -> None:
    items = [{"postings": [posting("@world", "alice", 1)], "idempotency_key": "dup"}] * 2
    assert code(await batch(tenant, items)) == (422, "invalid_request")
    # The key was never used: it binds the next request that carries it.
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 1), key="dup")).status_code == 201


async def test_3_a_hold_that_would_take_available_past_int64_is_overflow_and_reads_stay_up(tenant: Tenant) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "rich", MAX))).status_code == 201
    # @world is at -MAX: a hold of 2 on it would make available -MAX - 2, past -2^63.
    assert code(await post(tenant, "/holds", {"postings": [posting("@world", "x", 2)]})) == (409, "overflow")
    assert (await post(tenant, "/holds", {"postings": [posting("@world", "x", 1)]})).status_code == 201
    world = await account(tenant, "@world")
    assert (world["balances"], world["held"], world["available"]) == \
        ({"USD/2": -MAX}, {"USD/2": 1}, {"USD/2": -MAX - 1})
    listed = await tenant.client.get(tenant.path("/accounts"))
    assert listed.status_code == 200, listed.text


async def test_4_a_sum_past_int64_is_a_clear_error_never_500(tenant: Tenant) -> None:
    for source in ("@a", "@b"):
        assert (await transfer(tenant.client, tenant.id, posting(source, f"to{source[1:]}", MAX))).status_code == 201
    for prefix, status in (("@", 422), ("to", 422), ("@a", 200), ("", 200)):
        answer = await tenant.client.get(tenant.path("/balances"), params={"prefix": prefix})
        assert answer.status_code == status, (prefix, answer.text)
        if status == 422:
            assert answer.json()["error"]["code"] == "sum_out_of_range"
    whole = await tenant.client.get(tenant.path("/balances"))
    assert whole.json()["balances"] == {"USD/2": 0}


async def test_5_reversed_counts_amounts_and_verify_agrees(tenant: Tenant) -> None:
    await funded(tenant, 100)
    moved = await transfer(tenant.client, tenant.id, posting("alice", "bob", 10), posting("alice", "carol", 15))
    mixed = await transfer(tenant.client, tenant.id, posting("@world", "dave", 4),
                           posting("@world", "dave", 6, "EUR/2"))
    for original in (moved, mixed):
        reversal = await post(tenant, f"/transactions/{original.json()['id']}/reverse")
        assert reversal.status_code == 201, reversal.text
    shown = (await tenant.client.get(tenant.path(f"/transactions/{moved.json()['id']}"))).json()
    assert shown["reversed"] == 25
    shown = (await tenant.client.get(tenant.path(f"/transactions/{mixed.json()['id']}"))).json()
    assert shown["reversed"] == {"EUR/2": 6, "USD/2": 4}
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC, [tenant.id])
    assert verdict.identical, verdict.differences


@pytest.mark.parametrize("body", [
    b'{"postings":[{"source":"@world","destination":"alice","amount":1,"amount":5,"asset":"USD/2"}]}',
    b'{"postings":[{"source":"@world","destination":"alice","amount":1,"asset":"USD/2"}],"reference":"a",'
    b'"reference":"b"}',
])
async def test_6_a_body_that_repeats_a_key_is_refused(tenant: Tenant, body: bytes) -> None:
    answer = await tenant.client.post(tenant.path("/transactions"), content=body,
                                      headers={"Content-Type": "application/json"})
    assert code(answer) == (422, "invalid_request")
    assert (await tenant.client.get(tenant.path("/accounts/alice"))).json()["balances"] == {}


@pytest.mark.parametrize(("method", "path", "query"), [
    ("POST", "/transactions", "wiat=true"),
    ("POST", "/transactions", "wait=true&wait=false"),
    ("GET", "/accounts/alice", "min_positon=x"),
    ("GET", "/accounts/alice/entries", "limit=1&limit=2"),
    ("GET", "/transactions", "metadata.grp=g1&metadata.grp=zzz"),
    ("GET", "/balances", "prefx=a"),
    ("GET", "/transactions/abc", "x=1"),
])
async def test_7_unknown_and_repeated_parameters_are_refused(tenant: Tenant, method: str, path: str,
                                                            query: str) -> None:
    body = {"postings": [posting("@world", "alice", 1)]} if method == "POST" else None
    answer = await tenant.client.request(method, f"{tenant.path(path)}?{query}", json=body)
    assert code(answer) == (422, "invalid_request"), answer.text
    assert (await tenant.client.get(tenant.path("/accounts/alice"))).json()["balances"] == {}


async def test_8_a_non_ascii_key_is_kept_as_sent_and_repeated_headers_are_refused(tenant: Tenant) -> None:
    key = "paiement-é-" + uuid.uuid4().hex[:6]
    first = await tenant.client.post(tenant.path("/transactions"), params={"wait": "true"},
                                     json={"postings": [posting("@world", "alice", 1)]},
                                     headers={"Idempotency-Key": key.encode()})  # type: ignore[dict-item]
    assert first.status_code == 201, first.text
    assert first.json()["idempotency_key"] == key
    request = tenant.client.build_request("POST", tenant.path("/transactions"),
                                          json={"postings": [posting("@world", "alice", 1)]})
    request.headers = httpx.Headers([*request.headers.raw, (b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"b")])
    assert code(await tenant.client.send(request)) == (422, "invalid_request")
    for path in ("/accounts/alice", "/accounts/alice/entries"):
        read = tenant.client.build_request("GET", tenant.path(path))
        read.headers = httpx.Headers([*read.headers.raw, (b"Authorization", read.headers["Authorization"].encode())])
        assert code(await tenant.client.send(read)) == (422, "invalid_request")


async def test_9_a_partial_amount_on_several_postings_is_a_request_error(tenant: Tenant) -> None:
    await funded(tenant, 100)
    moved = await transfer(tenant.client, tenant.id, posting("alice", "bob", 10), posting("alice", "carol", 15))
    held = await post(tenant, "/holds", {"postings": [posting("alice", "bob", 5), posting("alice", "carol", 5)]})
    for path in (f"/transactions/{moved.json()['id']}/reverse", f"/holds/{held.json()['id']}/capture"):
        answer = await post(tenant, path, {"amount": 5})
        assert code(answer) == (422, "invalid_request"), answer.text
        assert "one posting" in answer.json()["error"]["message"]


async def test_9_a_put_naming_only_frozen_says_why_it_is_refused(tenant: Tenant) -> None:
    limited = await tenant.client.put(tenant.path("/accounts/alice"), params={"wait": "true"},
                                      json={"overdraft_limit": {"USD/2": 50}})
    assert limited.status_code == 201, limited.text
    assert (await transfer(tenant.client, tenant.id, posting("alice", "bob", 20))).status_code == 201
    frozen = await tenant.client.put(tenant.path("/accounts/alice"), params={"wait": "true"}, json={"frozen": True})
    assert code(frozen) == (409, "overdraft_in_use")
    assert "replaces the account's whole policy" in frozen.json()["error"]["message"]


async def test_10_a_replayed_rejection_answers_as_the_original_did(tenant: Tenant) -> None:
    refused = await transfer(tenant.client, tenant.id, posting("alice", "bob", 5), key="short")
    assert code(refused) == (409, "insufficient_funds")
    again = await transfer(tenant.client, tenant.id, posting("alice", "bob", 5), key="short")
    assert code(again) == (409, "insufficient_funds")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["transaction"]["id"] == refused.json()["transaction"]["id"]
    missing = await post(tenant, "/holds/nothing-here/void", key="void-1")
    assert code(missing) == (404, "not_found")
    repeat = await post(tenant, "/holds/nothing-here/void", key="void-1")
    assert (code(repeat), repeat.headers["Idempotent-Replayed"]) == ((404, "not_found"), "true")
    done = await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="fine")
    again = await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="fine")
    assert (done.status_code, again.status_code, again.headers["Idempotent-Replayed"]) == (201, 200, "true")


@pytest.mark.parametrize("address", [".", "..", "..."])
async def test_11_dot_only_addresses_are_refused(tenant: Tenant, address: str) -> None:
    answer = await transfer(tenant.client, tenant.id, posting("@world", address, 1))
    assert code(answer) == (422, "invalid_request")


@pytest.mark.parametrize(("at", "status"), [("2099-01-01t00:00:00z", 200), ("2099-01-01T00:00:00.5+01:00", 200),
                                            ("20990101T000000Z", 422), ("2099-01-01", 422),
                                            ("2099-01-01T00:00Z", 422)])
async def test_12_times_are_rfc3339_exactly(tenant: Tenant, at: str, status: int) -> None:
    answer = await tenant.client.get(tenant.path("/accounts/alice"), params={"at": at})
    assert answer.status_code == status, answer.text


async def test_1_the_producer_client_binds_a_batch_key_too(tenant: Tenant) -> None:
    async with LedgerProducer(SETTINGS.kafka_bootstrap, topic=SETTINGS.transactions_topic,
                              outcomes_topic=SETTINGS.outcomes_topic) as ledger:
        runs = []
        for _ in range(2):
            sent = await ledger.submit_batch(tenant.id, [[Posting("@world", "alice", 4, "USD/2")]] * 2,
                                             idempotency_key="producer-batch")
            runs.append([await ledger.outcome(s, 30) for s in sent])
    assert [o["status"] for o in runs[0]] == ["committed"] * 2
    assert [o.get("original_id") for o in runs[1]] == [s["id"] for s in runs[0]]
    assert (await account(tenant, "alice"))["balances"] == {"USD/2": 8}


async def test_5_postings_summing_past_int64_reverse_and_show_their_amounts(tenant: Tenant) -> None:
    # The review found these refused `overflow` by a first version of the fix, which summed across postings.
    big = 5 * 10**18
    same = await transfer(tenant.client, tenant.id, posting("@bank-a", "x", big), posting("@bank-b", "y", big))
    mixed = await transfer(tenant.client, tenant.id, posting("@world", "z", 6 * 10**18, "ETH/18"),
                           posting("@world", "z", 6 * 10**18, "WETH/18"))
    for original in (same, mixed):
        assert (await post(tenant, f"/transactions/{original.json()['id']}/reverse")).status_code == 201
    shown = (await tenant.client.get(tenant.path(f"/transactions/{same.json()['id']}"))).json()
    assert shown["reversed"] == str(2 * big)  # past int64: a decimal string, never a number Go cannot read
    shown = (await tenant.client.get(tenant.path(f"/transactions/{mixed.json()['id']}"))).json()
    assert shown["reversed"] == {"ETH/18": 6 * 10**18, "WETH/18": 6 * 10**18}
    verdict = await verify(SETTINGS.database_url, SETTINGS.kafka_bootstrap, TRANSACTIONS_TOPIC, [tenant.id])
    assert verdict.identical, verdict.differences


async def test_10_replays_of_every_kind_answer_as_the_original_did(tenant: Tenant) -> None:
    await funded(tenant, 10)
    refused_hold = await post(tenant, "/holds", {"postings": [posting("alice", "bob", 50)]}, key="h-key")
    assert code(refused_hold) == (409, "insufficient_funds")
    again = await post(tenant, "/holds", {"postings": [posting("alice", "bob", 50)]}, key="h-key")
    assert (code(again), again.headers["Idempotent-Replayed"]) == ((409, "insufficient_funds"), "true")
    held = await post(tenant, "/holds", {"postings": [posting("alice", "bob", 5)]})
    assert (await post(tenant, f"/holds/{held.json()['id']}/void")).status_code == 201
    for _ in range(2):
        closed = await post(tenant, f"/holds/{held.json()['id']}/capture", key="cap-key")
        assert code(closed) == (409, "hold_closed")
    assert closed.headers["Idempotent-Replayed"] == "true"
    for _ in range(2):
        missing = await post(tenant, "/transactions/no-such-tx/reverse", key="rev-key")
        assert code(missing) == (404, "not_found")
    assert missing.headers["Idempotent-Replayed"] == "true"


async def test_8_the_fast_balance_path_reads_headers_as_the_other_routes_do(tenant: Tenant) -> None:
    for path in ("/accounts/alice", "/accounts/alice/entries"):
        read = tenant.client.build_request("GET", tenant.path(path))
        read.headers = httpx.Headers([(k, v) for k, v in read.headers.raw if k.lower() != b"authorization"]
                                     + [(b"Authorization", b"Bearer \xff\xfe")])
        assert code(await tenant.client.send(read)) == (422, "invalid_request"), path
