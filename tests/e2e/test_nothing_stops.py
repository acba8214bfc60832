"""Contract v2, "nothing stops the ledger", through the whole path: what PostgreSQL refuses is refused at the
door, every id handed out resolves, a repeat is stored alike whatever the projection's lag, and tenants are
on the log."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from client import AppendUnconfirmed, LedgerProducer
from ledger.requests import Posting
from tests.conftest import Tenant
from tests.e2e.helpers import balances, posting, produce, transfer
from tests.stack import SETTINGS, Stack, token, unique
from tools import processes

NUL_BODIES = [
    {"metadata": {"n": "\u0000"}},
    {"metadata": {"a\u0000": "b"}},
    {"reference": "r\u0000"},
]


async def test_nul_in_any_stored_string_is_422_before_the_log(tenant: Tenant, db: asyncpg.Pool) -> None:
    for extra in NUL_BODIES:
        response = await transfer(tenant.client, tenant.id, posting("@world", "alice", 1), **extra)
        assert response.status_code == 422, (extra, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    assert await db.fetchval("SELECT count(*) FROM transactions WHERE tenant = $1", tenant.id) == 0
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 3))).status_code == 201


async def test_nul_straight_to_kafka_is_rejected_invalid_and_the_next_record_commits(
        tenant: Tenant, producer: AIOKafkaProducer) -> None:
    poisoned = unique("nul")
    await produce(producer, tenant.id.encode(), {"v": 1, "id": poisoned, "tenant": tenant.id,
                                                 "postings": [posting("@world", "alice", 5)],
                                                 "metadata": {"n": "\u0000"}})
    good = await produce(producer, tenant.id.encode(), {"v": 1, "id": unique("ok"), "tenant": tenant.id,
                                                        "postings": [posting("@world", "alice", 7)]})
    assert await balances(tenant.client, tenant.id, "alice", min_position=token(tenant.id, good)) == {"USD/2": 7}
    recorded = (await tenant.client.get(tenant.path(f"/transactions/{poisoned}"))).json()
    assert (recorded["status"], recorded["reason"]) == ("rejected", "invalid")


async def test_a_retried_key_without_wait_gets_an_id_that_resolves_to_the_original(tenant: Tenant) -> None:
    first = await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="k", wait=False)
    second = await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="k", wait=False)
    assert first.status_code == 202, first.text
    original = first.json()["id"]
    # Not decided yet when the retry came: a new id, appended; decided already: the original, replayed.
    assert (second.status_code, second.json()["id"] != original) in ((202, True), (200, False)), second.text
    for answer in (first, second):
        got = await tenant.client.get(tenant.path(f"/transactions/{answer.json()['id']}"),
                                      params={"min_position": answer.json()["position"], "timeout_ms": 5000})
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "committed"
        assert got.json().get("replay_of") == (None if answer.json()["id"] == original else original)
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 5}


async def test_a_repeat_with_another_body_is_recorded_alike_whatever_the_lag(tenant: Tenant, db: asyncpg.Pool) -> None:
    assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 5), key="k")).status_code == 201
    # The projection is current: the API answers 409 from it, and the repeat still goes on the log.
    current = await transfer(tenant.client, tenant.id, posting("@world", "alice", 6), key="k")
    assert current.status_code == 409 and current.json()["error"]["code"] == "idempotency_conflict"
    later = await transfer(tenant.client, tenant.id, posting("@world", "alice", 1))
    assert later.status_code == 201
    rows = await db.fetch("SELECT status, reason FROM transactions WHERE tenant = $1 AND reason IS NOT NULL",
                          tenant.id)
    assert [tuple(r) for r in rows] == [("rejected", "idempotency_conflict")]
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 6}


async def test_concurrent_repeats_each_get_an_id_that_resolves(tenant: Tenant) -> None:
    responses = await asyncio.gather(*(transfer(tenant.client, tenant.id, posting("@world", "alice", 2), key="race")
                                       for _ in range(8)))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    originals = {r.json()["id"] for r in responses}
    assert len(originals) == 1  # every answer is the one original transaction
    assert await balances(tenant.client, tenant.id, "alice") == {"USD/2": 2}


async def test_a_request_for_a_tenant_never_created_is_unknown_tenant() -> None:
    async with LedgerProducer(SETTINGS.kafka_bootstrap, topic=SETTINGS.transactions_topic,
                              outcomes_topic=SETTINGS.outcomes_topic) as ledger:
        sent = await ledger.submit(unique("nosuchtenant"), [Posting("@world", "alice", 1000, "USD/2")])
        outcome = await ledger.outcome(sent, timeout_s=30)
    assert (outcome["status"], outcome["reason"]) == ("rejected", "unknown_tenant")


async def test_creating_a_tenant_twice_is_409_and_a_key_works_at_once(admin: httpx.AsyncClient, stack: Stack) -> None:
    tenant = unique()
    created = await admin.post("/v1/tenants", json={"id": tenant, "name": "Acme"})
    assert created.status_code == 201, created.text
    again = await admin.post("/v1/tenants", json={"id": tenant, "name": "Other"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_exists"
    bad = await admin.post("/v1/tenants", json={"id": unique(), "name": "a\u0000b"})
    assert bad.status_code == 422
    key = (await admin.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read", "write"]})).json()["key"]
    async with httpx.AsyncClient(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert (await transfer(client, tenant, posting("@world", "alice", 4))).status_code == 201


async def test_an_unconfirmed_client_append_carries_its_id() -> None:
    # A topic that does not exist (and is never created): the append cannot be confirmed, and the error
    # says which id to look up.
    ledger = LedgerProducer(SETTINGS.kafka_bootstrap, follow_outcomes=False, topic=unique("no-such-topic"),
                            request_timeout_ms=2000)
    await ledger.start()
    try:
        try:
            await ledger.submit("acme", [Posting("@world", "alice", 1, "USD/2")], id="the-id")
        except AppendUnconfirmed as e:
            assert (e.tenant, e.id) == ("acme", "the-id")
        else:
            raise AssertionError("an append to a topic that does not exist was confirmed")
    finally:
        await ledger.stop()


async def test_the_projector_refuses_a_log_whose_times_producers_set(stack: Stack) -> None:
    # Holds expire and replays reproduce by the log's times: a topic where producers set them is refused.
    topic = unique("createtime")
    admin = AIOKafkaAdminClient(bootstrap_servers=SETTINGS.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"message.timestamp.type": "CreateTime"})])
        env = {**stack.env, "LEDGER_TRANSACTIONS_TOPIC": topic, "LEDGER_PROJECTOR_GROUP": unique("group")}
        projector = processes.spawn("projections.app", env, stack.logs / "projector-createtime.log")
        try:
            assert await asyncio.to_thread(projector.wait, 60) == 78
        finally:
            processes.stop(projector, "projector")
    finally:
        await admin.delete_topics([topic])
        await admin.close()
