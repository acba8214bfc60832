"""Contract v3's events out, end to end: webhooks delivered by the real dispatcher to real local receivers
(signed, retried, surviving a restart, one dead endpoint beside a live one, refused addresses), and balance
monitors decided in the fold."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from dispatch.signing import verify
from infra.kafka import log_end
from tests.conftest import Tenant, create_tenant
from tests.e2e.helpers import posting, transfer
from tests.e2e.receiver import Received, Receiver
from tests.e2e.test_holds import code, funded, post
from tests.stack import OUTCOMES_TOPIC, SETTINGS, Stack
from tools import processes


async def hook(tenant: Tenant, url: str, events: list[str] | None = None) -> dict[str, Any]:
    created = await tenant.client.post(tenant.path("/webhooks"), json={"url": url, "events": events or ["*"]})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def deliveries(tenant: Tenant, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    listed = await tenant.client.get(tenant.path(f"/webhooks/{webhook_id}/deliveries"), params=params)
    assert listed.status_code == 200, listed.text
    rows: list[dict[str, Any]] = listed.json()["deliveries"]
    return rows


async def until(check: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_an_endpoint_is_registered_listed_and_deleted_and_its_secret_shown_once(tenant: Tenant,
                                                                                     admin: httpx.AsyncClient,
                                                                                     stack: Stack) -> None:
    async with Receiver() as receiver:
        created = await hook(tenant, receiver.url(), ["transaction.committed", "hold.created"])
        assert created["secret"].startswith("whsec_") and created["id"].startswith("wh_")
        assert created["events"] == ["transaction.committed", "hold.created"]
        listed = (await tenant.client.get(tenant.path("/webhooks"))).json()["webhooks"]
        assert [(w["id"], w["url"]) for w in listed] == [(created["id"], receiver.url())]
        assert all("secret" not in w for w in listed)
        assert "secret" not in (await tenant.client.get(tenant.path(f"/webhooks/{created['id']}"))).json()
        other = await create_tenant(admin, stack)
        try:  # another tenant sees none of it
            assert (await other.client.get(other.path(f"/webhooks/{created['id']}"))).status_code == 404
            assert (await other.client.delete(other.path(f"/webhooks/{created['id']}"))).status_code == 404
            assert (await other.client.get(other.path(f"/webhooks/{created['id']}/deliveries"))).status_code == 404
            assert (await other.client.get(other.path("/webhooks"))).json()["webhooks"] == []
        finally:
            await other.client.aclose()
        deleted = await tenant.client.delete(tenant.path(f"/webhooks/{created['id']}"))
        assert deleted.status_code == 200 and deleted.json()["deleted_at"] is not None
        assert (await tenant.client.delete(tenant.path(f"/webhooks/{created['id']}"))).status_code == 404
        assert (await tenant.client.get(tenant.path("/webhooks"))).json()["webhooks"] == []


async def test_bad_endpoints_are_refused_with_a_clear_error(tenant: Tenant) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"url": "ftp://localhost/x", "events": ["*"]}, 422, "url_not_allowed"),
        ({"url": "http://localhost/" + "a" * 2048, "events": ["*"]}, 422, "invalid_request"),
        ({"url": "http://localhost/x", "events": []}, 422, "invalid_request"),
        ({"url": "http://localhost/x", "events": ["transaction.exploded"]}, 422, "invalid_request"),
        ({"url": "http://localhost/x", "events": ["*", "*"]}, 422, "invalid_request"),
        ({"url": "http://localhost/x"}, 422, "invalid_request"),
        ({"url": "http://user:pw@localhost/x", "events": ["*"]}, 422, "url_not_allowed"),
        ({"url": "http://localhost/x", "events": ["*"], "extra": 1}, 422, "invalid_request"),
    ]
    for body, status, error in cases:
        refused = await tenant.client.post(tenant.path("/webhooks"), json=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, error), (body, refused.text)


async def test_addresses_on_this_side_of_the_network_are_refused_for_every_family(tenant: Tenant) -> None:
    """`localhost` and `127.0.0.1` are the test session's allowed hosts; any other spelling of a loopback,
    private, link-local or unspecified address, IPv4, IPv6 or IPv4-mapped, is refused."""
    for host in ("127.0.0.2", "2130706433", "0177.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                 "169.254.169.254", "0.0.0.0", "[::1]", "[::]", "[fe80::1]", "[fc00::1]", "[::ffff:127.0.0.1]",
                 "[::ffff:10.0.0.1]", "[::ffff:169.254.169.254]", "100.64.0.1", "224.0.0.1"):
        refused = await tenant.client.post(tenant.path("/webhooks"),
                                           json={"url": f"http://{host}:8080/x", "events": ["*"]})
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "url_not_allowed"), (host,
                                                                                                   refused.text)


async def test_an_event_is_delivered_signed_with_its_id_and_its_transaction_as_get_shows_it(tenant: Tenant) -> None:
    async with Receiver() as receiver:
        created = await hook(tenant, receiver.url())
        sent = await transfer(tenant.client, tenant.id, posting("@world", "alice", 100))
        assert sent.status_code == 201
        [got] = await receiver.wait_for(1)
        body = got.json
        assert verify(created["secret"], got.body, got.headers["ledger-signature"])
        assert not verify(created["secret"], got.body + b" ", got.headers["ledger-signature"])
        assert got.headers["ledger-event-id"] == body["id"]
        assert (body["type"], body["tenant"], body["position"]) == ("transaction.committed", tenant.id,
                                                                    sent.json()["position"])
        shown = (await tenant.client.get(tenant.path(f"/transactions/{sent.json()['id']}"))).json()
        assert body["data"] == shown
        assert body["created_at"].endswith("Z")
        rows = await until(lambda: deliveries(tenant, created["id"]))
        assert [(r["event_id"], r["type"], r["status_code"], r["error"], r["attempt"]) for r in rows] == [
            (body["id"], "transaction.committed", 200, None, 1)]


async def test_a_failing_endpoint_is_retried_with_backoff_with_the_same_id_and_bytes(tenant: Tenant) -> None:
    async with Receiver(answer=lambda n: 500 if n < 2 else 200) as receiver:
        created = await hook(tenant, receiver.url(), ["transaction.committed"])
        assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 1))).status_code == 201
        got = await receiver.wait_for(3, timeout_s=40)
        assert len(got) == 3
        assert len({r.headers["ledger-event-id"] for r in got}) == 1 and len({r.body for r in got}) == 1
        assert got[1].at - got[0].at < 10.5  # the first retry within 10 s
        await asyncio.sleep(1)
        assert len(receiver.received) == 3  # acknowledged: not sent again
        rows = await until(lambda: _with_attempts(tenant, created["id"], 3))
        assert [(r["attempt"], r["status_code"]) for r in rows] == [(3, 200), (2, 500), (1, 500)]
        page = await deliveries(tenant, created["id"], limit=2)
        assert [r["attempt"] for r in page] == [3, 2]


async def _with_attempts(tenant: Tenant, webhook_id: str, count: int) -> list[dict[str, Any]] | None:
    rows = await deliveries(tenant, webhook_id)
    return rows if len(rows) >= count else None


async def test_only_the_subscribed_types_are_sent_and_holds_and_rejections_have_theirs(tenant: Tenant) -> None:
    async with Receiver() as holds, Receiver() as everything:
        await hook(tenant, holds.url(), ["hold.created", "hold.captured", "hold.voided", "hold.expired"])
        await hook(tenant, everything.url(), ["*"])
        await funded(tenant, 100)
        assert code(await transfer(tenant.client, tenant.id, posting("alice", "bob", 1000))) == (
            409, "insufficient_funds")
        first = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 10)]})).json()["id"]
        second = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 5)]})).json()["id"]
        short = (await post(tenant, "/holds", {"postings": [posting("alice", "shop", 1)], "expires_in_s": 1})
                 ).json()["id"]
        assert (await post(tenant, f"/holds/{first}/capture")).status_code == 201
        assert (await post(tenant, f"/holds/{second}/void")).status_code == 201
        got = await holds.wait_for(6, timeout_s=40)
        by_type = {(r.json["type"], r.json["data"]["id"]): r.json["data"] for r in got}  # type: ignore[index]
        assert set(by_type) == {("hold.created", first), ("hold.created", second), ("hold.created", short),
                                ("hold.captured", first), ("hold.voided", second), ("hold.expired", short)}
        assert by_type[("hold.captured", first)]["status"] == "captured"
        assert by_type[("hold.expired", short)]["status"] == "expired"
        await everything.wait_for(8, timeout_s=20)
        types = everything.types()
        assert types.count("transaction.committed") == 1 and types.count("transaction.rejected") == 1
        rejected = next(r.json for r in everything.received if r.json["type"] == "transaction.rejected")
        assert rejected["data"]["reason"] == "insufficient_funds"  # type: ignore[index]
        assert "transaction.committed" not in holds.types()


async def test_a_dead_endpoint_delays_no_other(tenant: Tenant, admin: httpx.AsyncClient, stack: Stack) -> None:
    """One endpoint never answers (each attempt waits out the 10 s timeout); another tenant's endpoint and this
    tenant's second one still get every event within a few seconds."""
    other = await create_tenant(admin, stack)
    try:
        async with Receiver(answer=lambda n: None) as dead, Receiver() as live, Receiver() as elsewhere:
            dead_hook = await hook(tenant, dead.url(), ["transaction.committed"])
            await hook(tenant, live.url(), ["transaction.committed"])
            await hook(other, elsewhere.url(), ["transaction.committed"])
            started = time.monotonic()
            for i in range(30):
                assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", i + 1),
                                       wait=i == 29)).status_code in (201, 202)
                assert (await transfer(other.client, other.id, posting("@world", "bob", i + 1),
                                       wait=i == 29)).status_code in (201, 202)
            assert len(await live.wait_for(30, timeout_s=15)) == 30
            assert len(await elsewhere.wait_for(30, timeout_s=15)) == 30
            assert time.monotonic() - started < 15
            assert len({r.json["id"] for r in live.received}) == 30
            assert dead.received  # it was tried, and held only its own workers
            await tenant.client.delete(tenant.path(f"/webhooks/{dead_hook['id']}"))
    finally:
        await other.client.aclose()


async def test_an_address_refused_at_delivery_is_recorded_and_never_contacted(tenant: Tenant) -> None:
    """The API lets `127.0.0.1` be registered in this session; the dispatcher does not: the delivery-time check
    (a name may resolve elsewhere later) refuses it and says so in the delivery log."""
    async with Receiver() as receiver:
        created = await hook(tenant, receiver.url(host="127.0.0.1"), ["transaction.committed"])
        assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 1))).status_code == 201
        rows = await until(lambda: deliveries(tenant, created["id"]))
        assert rows and rows[0]["status_code"] is None and rows[0]["error"].startswith("url_not_allowed")
        assert receiver.received == []
        await tenant.client.delete(tenant.path(f"/webhooks/{created['id']}"))


async def test_a_killed_dispatcher_delivers_every_event_at_least_once_with_its_one_id(tenant: Tenant,
                                                                                     stack: Stack) -> None:
    async with Receiver(delay_s=0.3) as receiver:
        await hook(tenant, receiver.url(), ["transaction.committed"])
        try:
            ids = []
            for i in range(40):
                sent = await transfer(tenant.client, tenant.id, posting("@world", "alice", i + 1), wait=False)
                assert sent.status_code == 202
                ids.append(sent.json()["id"])
                if i == 20:
                    await receiver.wait_for(1)
                    stack.kill_dispatcher()  # mid-delivery: one is being answered
            stack.start_dispatcher()
            async def all_arrived() -> bool:
                return {r.json["data"]["id"] for r in receiver.received} >= set(ids)  # type: ignore[index]

            assert await until(all_arrived, 90), "not every event was delivered after the restart"
            delivered: dict[str, set[str]] = {}
            for r in receiver.received:  # a repeat carries the same event id: one id per transaction
                delivered.setdefault(r.json["data"]["id"], set()).add(str(r.json["id"]))  # type: ignore[index]
            assert all(len(events) == 1 for events in delivered.values()), delivered
        finally:
            stack.ensure_dispatcher()


async def test_a_replay_of_the_log_sends_nothing_already_acknowledged(tenant: Tenant, stack: Stack) -> None:
    """A dispatcher in a fresh consumer group reads every decision from the start of the log: each event it
    finds is stored already, under the same id, and nothing acknowledged goes out again."""
    async with Receiver() as receiver:
        await hook(tenant, receiver.url(), ["transaction.committed"])
        for i in range(5):
            assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", i + 1))).status_code == 201
        assert len(await receiver.wait_for(5)) == 5
        await asyncio.sleep(0.5)
        env = {**stack.dispatcher_env, "LEDGER_DISPATCHER_GROUP": f"replay-{tenant.id}",
               "LEDGER_DISPATCHER_METRICS_PORT": "0"}
        end = await log_end(SETTINGS.kafka_bootstrap, OUTCOMES_TOPIC)
        replay = processes.spawn("dispatch", env, stack.logs / "dispatcher-replay.log")
        try:
            assert await until(lambda: _committed_to(env["LEDGER_DISPATCHER_GROUP"], end), 60), \
                "the replaying dispatcher did not read the log to its end"
            assert replay.poll() is None
            await asyncio.sleep(1)
            assert len(receiver.received) == 5
        finally:
            processes.stop(replay, "replaying dispatcher")


async def _committed_to(group: str, end: dict[int, int]) -> bool:
    """Whether `group` has committed offsets at or past `end` on every partition of the outcomes topic."""
    kafka = AIOKafkaConsumer(bootstrap_servers=SETTINGS.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await kafka.start()
    try:
        for partition, offset in end.items():
            committed = await kafka.committed(TopicPartition(OUTCOMES_TOPIC, partition))
            if offset and (committed is None or committed < offset):
                return False
        return True
    finally:
        await kafka.stop()


async def test_a_monitor_fires_once_per_crossing_and_is_removed(tenant: Tenant, db: asyncpg.Pool) -> None:
    async with Receiver() as receiver:
        await hook(tenant, receiver.url(), ["balance.crossed"])
        await funded(tenant, 1000)
        made = await post(tenant, "/monitors", {"account": "alice", "asset": "USD/2", "below": 500, "above": 2000})
        assert made.status_code == 201, made.text
        monitor = made.json()
        assert (monitor["account"], monitor["below"], monitor["above"], monitor["status"]) == (
            "alice", 500, 2000, "active")
        assert (await tenant.client.get(tenant.path(f"/monitors/{monitor['id']}"))).json() == monitor
        listed = (await tenant.client.get(tenant.path("/monitors"))).json()["monitors"]
        assert [m["id"] for m in listed] == [monitor["id"]]
        steps = [("alice", "@world", 400), ("alice", "@world", 100), ("alice", "@world", 1),
                 ("alice", "@world", 9), ("@world", "alice", 1511)]
        moved = [(await transfer(tenant.client, tenant.id, posting(*s))).json()["id"] for s in steps]
        got = await receiver.wait_for(2)
        await asyncio.sleep(1)
        data = sorted((r.json["data"] for r in receiver.received), key=lambda d: d["direction"])  # type: ignore
        assert data == [
            {"monitor": monitor["id"], "account": "alice", "asset": "USD/2", "balance": 2001, "threshold": 2000,
             "direction": "above", "transaction_id": moved[4]},
            {"monitor": monitor["id"], "account": "alice", "asset": "USD/2", "balance": 499, "threshold": 500,
             "direction": "below", "transaction_id": moved[2]}]
        assert len(got) == 2
        removed = await tenant.client.delete(tenant.path(f"/monitors/{monitor['id']}"), params={"wait": "true"})
        assert removed.status_code == 200 and removed.json()["status"] == "removed", removed.text
        assert (await transfer(tenant.client, tenant.id, posting("alice", "@world", 2000))).status_code == 201
        await asyncio.sleep(1.5)
        assert len(receiver.received) == 2
        again = await tenant.client.delete(tenant.path(f"/monitors/{monitor['id']}"), params={"wait": "true"})
        assert code(again) == (404, "not_found")
        assert (await tenant.client.get(tenant.path("/monitors"))).json()["monitors"] == []
        shown = (await tenant.client.get(tenant.path("/monitors"), params={"removed": "true"})).json()["monitors"]
        assert [m["status"] for m in shown] == ["removed"]


async def test_monitor_requests_are_checked_and_bounded(tenant: Tenant) -> None:
    for body in ({"account": "alice", "asset": "USD/2"}, {"account": "alice", "asset": "USD/2", "below": "5"},
                 {"account": "alice", "asset": "USD/2", "below": 2**63}, {"asset": "USD/2", "below": 1},
                 {"account": "alice", "asset": "USD/2", "below": 1, "limit": 3}):
        refused = await post(tenant, "/monitors", body)
        assert refused.status_code == 422, (body, refused.text)
    for i in range(16):
        assert (await post(tenant, "/monitors", {"account": "bob", "asset": "USD/2", "below": i},
                           wait=i == 15)).status_code in (201, 202)
    assert code(await post(tenant, "/monitors", {"account": "bob", "asset": "USD/2", "below": 99})) == (
        422, "too_many_monitors")
    assert (await tenant.client.get(tenant.path("/monitors/nope"))).status_code == 404


def _received_ids(got: list[Received]) -> set[str]:
    return {str(r.json["id"]) for r in got}


async def test_a_dispatcher_restarted_with_deliveries_due_sends_them(tenant: Tenant, stack: Stack) -> None:
    """Deliveries pending in PostgreSQL survive a stop: a failing endpoint's retry is sent by the next
    process once it is due."""
    answers = iter([503])
    async with Receiver(answer=lambda n: next(answers, 200)) as receiver:
        await hook(tenant, receiver.url(), ["transaction.committed"])
        assert (await transfer(tenant.client, tenant.id, posting("@world", "alice", 1))).status_code == 201
        await receiver.wait_for(1)
        try:
            stack.kill_dispatcher(sig=15)
            stack.start_dispatcher()
            got = await receiver.wait_for(2, timeout_s=40)
            assert len(got) == 2 and len(_received_ids(got)) == 1
        finally:
            stack.ensure_dispatcher()

