"""Unit tests of the SDK's own logic (request building, retries, deadlines, errors, pages, read-your-writes),
against `httpx.MockTransport`: no server here (test_live.py has the real one)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from wallet_ledger import (
    Account,
    Assertion,
    AsyncLedgerClient,
    BatchItem,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    Hold,
    InvalidRequest,
    LedgerClient,
    LedgerError,
    Monitor,
    NotFound,
    Pending,
    Posting,
    PostingAtMost,
    RateLimited,
    RetryPolicy,
    Transaction,
    Unauthorized,
    Unavailable,
    Webhook,
)

BASE = "http://ledger.test"
POSITION = "cG9zaXRpb24tMQ"
TX = {"id": "tx1", "status": "committed", "postings": [{"source": "@world", "destination": "alice", "amount": 100,
                                                          "asset": "USD/2"}],
      "metadata": {}, "reference": None, "idempotency_key": "k", "position": POSITION,
      "created_at": "2026-12-04T10:30:31.496Z", "committed_at": "2026-12-04T10:30:31.500Z",
      "balances_after": {"alice": {"USD/2": 100}, "@world": {"USD/2": -100}}, "hash": "a" * 64,
      "previous_hash": "0" * 64, "future_field": {"kept": True}}


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def error(status: int, code: str, message: str = "m", headers: dict[str, str] | None = None,
          **extra: Any) -> httpx.Response:
    return answer(status, {"error": {"code": code, "message": message}, **extra}, headers)


class Script:
    """A MockTransport handler: answers in turn (a response, an exception to raise, or a function of the
    request), keeping every request it saw."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        return item

    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]

    def params(self, index: int = -1) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in self.requests[index].url.params.multi_items():
            out.setdefault(k, []).append(v)
        return out


class FakeTime:
    """A clock that moves only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay

    async def asleep(self, delay: float) -> None:
        self.sleep(delay)


def client(script: Script, fake: FakeTime | None = None, **kwargs: Any) -> LedgerClient:
    ledger = LedgerClient(BASE, "secret-key", "acme", transport=httpx.MockTransport(script), **kwargs)
    fake = fake or FakeTime()
    ledger._sleep = fake.sleep
    ledger._settings.clock = fake.clock
    return ledger


def aclient(script: Script, fake: FakeTime | None = None, **kwargs: Any) -> AsyncLedgerClient:
    ledger = AsyncLedgerClient(BASE, "secret-key", "acme", transport=httpx.MockTransport(script), **kwargs)
    fake = fake or FakeTime()
    ledger._sleep = fake.asleep
    ledger._settings.clock = fake.clock
    return ledger


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


# --- requests ---------------------------------------------------------------------------------------------------


def test_transfer_request_and_result() -> None:
    script = Script(answer(201, TX))
    tx = client(script).transfer([Posting("@world", "alice", 100, "USD/2"), Posting.at_most("alice", "bob", 50, "EUR")],
                                 metadata={"order": "42"}, reference="ref-1", if_version={"alice": 3},
                                 assert_=[Assertion("alice", "USD/2", min=0)])
    request = script.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/v1/tenants/acme/transactions"
    assert script.params() == {"wait": ["true"]}
    assert request.headers["authorization"] == "Bearer secret-key"
    assert request.headers["content-type"] == "application/json"
    assert uuid.UUID(request.headers["idempotency-key"]).version == 4
    assert body(request) == {
        "postings": [{"source": "@world", "destination": "alice", "amount": 100, "asset": "USD/2"},
                     {"source": "alice", "destination": "bob", "amount_max": 50, "asset": "EUR"}],
        "metadata": {"order": "42"}, "reference": "ref-1", "if_version": {"alice": 3},
        "assert": [{"account": "alice", "asset": "USD/2", "min": 0}]}
    assert isinstance(tx, Transaction)
    assert tx.id == "tx1" and tx.committed and not tx.replayed
    assert tx.postings == (Posting("@world", "alice", 100, "USD/2"),)
    assert tx.balances_after == {"alice": {"USD/2": 100}, "@world": {"USD/2": -100}}
    assert tx.created_at == datetime(2026, 12, 4, 10, 30, 31, 496000, tzinfo=UTC)
    assert tx.hash == "a" * 64 and tx.previous_hash == "0" * 64
    assert tx.raw["future_field"] == {"kept": True}  # unknown fields are kept


def test_wait_false_and_pending() -> None:
    script = Script(answer(202, {"id": "tx9", "status": "pending", "position": "p9"}))
    result = client(script).transfer([Posting("@world", "alice", 1, "PTS")], wait=False)
    assert "wait" not in script.params()
    assert result == Pending("tx9", "p9")


def test_wait_with_timeout_ms() -> None:
    script = Script(answer(202, {"id": "tx9", "status": "pending", "position": "p9"}))
    result = client(script).transfer([Posting("@world", "alice", 1, "PTS")], timeout_ms=100)
    assert script.params() == {"wait": ["true"], "timeout_ms": ["100"]}
    assert isinstance(result, Pending)


def test_amounts_are_ints_only() -> None:
    with pytest.raises(TypeError):
        Posting("@world", "alice", 1.5, "USD/2")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Posting("@world", "alice", True, "USD/2")
    script = Script(answer(201, TX))
    with pytest.raises(TypeError):
        client(script).capture("h1", amount=2.0)  # type: ignore[arg-type]
    assert script.requests == []


# Every route of the contract: (call, method, path, query, body).
ROUTES: list[tuple[Callable[[LedgerClient], Any], str, str, dict[str, list[str]], Any]] = [
    (lambda c: c.batch([BatchItem([Posting("@world", "a", 1, "PTS")], idempotency_key="i1"),
                        {"postings": [{"source": "a", "destination": "b", "amount": 1, "asset": "PTS"}]}]),
     "POST", "/transactions/batch", {"wait": ["true"]},
     {"transactions": [{"postings": [{"source": "@world", "destination": "a", "amount": 1, "asset": "PTS"}],
                        "idempotency_key": "i1"},
                       {"postings": [{"source": "a", "destination": "b", "amount": 1, "asset": "PTS"}]}],
      "atomic": True}),
    (lambda c: c.get_transaction("tx1"), "GET", "/transactions/tx1", {}, None),
    (lambda c: c.list_transactions(account="alice", status="committed", since="2026-01-01T00:00:00Z",
                                   until=datetime(2026, 2, 1, tzinfo=UTC), metadata={"order": "42"}, limit=10),
     "GET", "/transactions", {"account": ["alice"], "status": ["committed"], "since": ["2026-01-01T00:00:00Z"],
                              "until": ["2026-02-01T00:00:00+00:00"], "limit": ["10"], "metadata.order": ["42"]},
     None),
    (lambda c: c.reverse("tx1", 50, metadata={"why": "refund"}), "POST", "/transactions/tx1/reverse",
     {"wait": ["true"]}, {"amount": 50, "metadata": {"why": "refund"}}),
    (lambda c: c.hold([Posting("alice", "shop", 700, "USD/2")], expires_in_s=60), "POST", "/holds",
     {"wait": ["true"]},
     {"postings": [{"source": "alice", "destination": "shop", "amount": 700, "asset": "USD/2"}], "expires_in_s": 60}),
    (lambda c: c.capture("h1", 450), "POST", "/holds/h1/capture", {"wait": ["true"]}, {"amount": 450}),
    (lambda c: c.capture("h1"), "POST", "/holds/h1/capture", {"wait": ["true"]}, {}),
    (lambda c: c.void("h1"), "POST", "/holds/h1/void", {"wait": ["true"]}, {}),
    (lambda c: c.get_hold("h1"), "GET", "/holds/h1", {}, None),
    (lambda c: c.get_account("@world"), "GET", "/accounts/@world", {}, None),
    (lambda c: c.get_account("alice", at="2026-01-01T00:00:00Z"), "GET", "/accounts/alice",
     {"at": ["2026-01-01T00:00:00Z"]}, None),
    (lambda c: c.snapshot(["a", "b"]), "GET", "/accounts", {"address": ["a", "b"]}, None),
    (lambda c: c.list_accounts("customers:", limit=5), "GET", "/accounts", {"prefix": ["customers:"], "limit": ["5"]},
     None),
    (lambda c: c.balances("customers:"), "GET", "/balances", {"prefix": ["customers:"]}, None),
    (lambda c: c.entries("alice", "USD/2", limit=2), "GET", "/accounts/alice/entries",
     {"asset": ["USD/2"], "limit": ["2"]}, None),
    (lambda c: c.statement("alice", "USD/2", from_="2026-01-01T00:00:00Z", until="2026-02-01T00:00:00Z"), "GET",
     "/accounts/alice/statement",
     {"asset": ["USD/2"], "from": ["2026-01-01T00:00:00Z"], "until": ["2026-02-01T00:00:00Z"]}, None),
    (lambda c: c.set_policy("alice", overdraft_limit={"USD/2": 500}, frozen=False, metadata={"tier": "gold"}),
     "PUT", "/accounts/alice", {"wait": ["true"]},
     {"overdraft_limit": {"USD/2": 500}, "frozen": False, "metadata": {"tier": "gold"}}),
    (lambda c: c.chain(), "GET", "/chain", {}, None),
    (lambda c: c.create_webhook("https://example.com/hook", ["transaction.committed"]), "POST", "/webhooks", {},
     {"url": "https://example.com/hook", "events": ["transaction.committed"]}),
    (lambda c: c.list_webhooks(), "GET", "/webhooks", {}, None),
    (lambda c: c.get_webhook("wh_1"), "GET", "/webhooks/wh_1", {}, None),
    (lambda c: c.delete_webhook("wh_1"), "DELETE", "/webhooks/wh_1", {}, None),
    (lambda c: c.deliveries("wh_1", limit=3), "GET", "/webhooks/wh_1/deliveries", {"limit": ["3"]}, None),
    (lambda c: c.create_monitor("alice", "USD/2", below=100), "POST", "/monitors", {"wait": ["true"]},
     {"account": "alice", "asset": "USD/2", "below": 100}),
    (lambda c: c.get_monitor("m1"), "GET", "/monitors/m1", {}, None),
    (lambda c: c.list_monitors(removed=True), "GET", "/monitors", {"removed": ["true"]}, None),
    (lambda c: c.delete_monitor("m1"), "DELETE", "/monitors/m1", {"wait": ["true"]}, None),
]


@pytest.mark.parametrize(("call", "method", "path", "query", "sent"), ROUTES)
def test_routes(call: Callable[[LedgerClient], Any], method: str, path: str, query: dict[str, list[str]],
                sent: Any) -> None:
    script = Script(answer(200, {}))
    call(client(script))
    request = script.requests[0]
    assert (request.method, request.url.path) == (method, "/v1/tenants/acme" + path)
    assert script.params() == query
    assert (body(request) if request.content else None) == sent
    writes = method in ("POST", "PUT") or (path.startswith("/monitors/") and method == "DELETE")
    assert ("idempotency-key" in request.headers) == (writes and not path.startswith("/webhooks"))


def test_export_csv_asks_for_csv() -> None:
    csv = "transaction_id,asset,amount,balance_after,committed_at\r\ntx1,USD/2,100,100,2026-12-04T10:30:31.500Z\r\n"
    script = Script(httpx.Response(200, text=csv, headers={"content-type": "text/csv; charset=utf-8"}))
    assert client(script).export_csv("alice") == csv
    assert script.requests[0].headers["accept"] == "text/csv"
    assert script.requests[0].url.path == "/v1/tenants/acme/accounts/alice/entries"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        client(Script(answer(200, {}))).statement("alice", "USD/2", from_=datetime(2026, 1, 1))


def test_results_parse_defensively() -> None:
    account = Account.parse({"address": "alice", "balances": {"USD/2": 100, "BIG": "99999999999999999999"},
                             "held": {"USD/2": 30}, "available": {"USD/2": 70}, "version": 4, "position": "p",
                             "frozen": True, "brand_new": 1})
    assert account.balance("USD/2") == 100 and account.balance("EUR") == 0
    assert account.balances["BIG"] == 99999999999999999999
    assert (account.held, account.available, account.version, account.frozen) == ({"USD/2": 30}, {"USD/2": 70}, 4,
                                                                                   True)
    assert account.raw["brand_new"] == 1
    empty = Transaction.parse({"unexpected": []})
    assert (empty.id, empty.postings, empty.created_at, empty.metadata) == ("", (), None, {})
    assert Transaction.parse("not an object").raw == {}
    hold = Hold.parse({"id": "h1", "status": "held", "postings": [{"source": "a", "destination": "b", "amount_max": 5,
                                                                   "asset": "PTS"}], "expires_at": "garbage"})
    assert hold.postings == (PostingAtMost("a", "b", 5, "PTS"),) and hold.expires_at is None
    webhook = Webhook.parse({"id": "wh_1", "url": "https://x", "events": ["*"], "secret": "whsec_x"})
    assert webhook.secret == "whsec_x" and "whsec_x" not in repr(webhook)
    monitor = Monitor.parse({"id": "m1", "account": "a", "asset": "PTS", "below": 5, "above": None,
                             "status": "active"})
    assert (monitor.below, monitor.above) == (5, None)


# --- idempotency and retries ----------------------------------------------------------------------------------


def test_key_generated_and_reused_across_retries() -> None:
    fake = FakeTime()
    script = Script(error(503, "unavailable", headers={"Retry-After": "1"}), httpx.ConnectError("refused"),
                    httpx.ReadTimeout("slow"), answer(201, TX))
    ledger = client(script, fake)
    tx = ledger.transfer([Posting("@world", "alice", 100, "USD/2")])
    assert isinstance(tx, Transaction)
    keys = script.keys()
    assert len(keys) == 4 and len(set(keys)) == 1 and keys[0] is not None
    assert len({r.content for r in script.requests}) == 1  # the same body on every attempt
    assert len(fake.sleeps) == 3 and fake.sleeps[0] >= 1  # Retry-After honoured
    ledger.transfer([Posting("@world", "alice", 100, "USD/2")])
    assert script.keys()[-1] != keys[0]  # another call, another key


def test_given_key_is_sent() -> None:
    script = Script(error(503, "unavailable"), answer(201, TX))
    client(script).transfer([Posting("@world", "alice", 100, "USD/2")], idempotency_key="order-42")
    assert script.keys() == ["order-42", "order-42"]


def test_replayed_answer_is_a_success() -> None:
    script = Script(answer(200, TX, {"Idempotent-Replayed": "true"}))
    tx = client(script).transfer([Posting("@world", "alice", 100, "USD/2")], idempotency_key="k")
    assert isinstance(tx, Transaction) and tx.replayed and tx.id == "tx1"


def test_429_waits_retry_after() -> None:
    fake = FakeTime()
    script = Script(error(429, "rate_limited", headers={"Retry-After": "3"}), answer(200, {"count": 2, "head": "h"}))
    chain = client(script, fake).chain()
    assert chain.count == 2
    assert len(script.requests) == 2
    assert 3 <= fake.sleeps[0] <= 3.3


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "malformed_json", InvalidRequest), (422, "invalid_request", InvalidRequest),
    (413, "payload_too_large", InvalidRequest), (401, "unauthorized", Unauthorized), (403, "forbidden", Forbidden),
    (404, "not_found", NotFound), (409, "insufficient_funds", Conflict), (500, "internal", LedgerError),
])
def test_no_retry_and_error_mapping(status: int, code: str, cls: type[LedgerError]) -> None:
    fake = FakeTime()
    script = Script(error(status, code, "why", headers={"X-Request-Id": "req-1"}, transaction={"id": "tx1"}))
    with pytest.raises(cls) as caught:
        client(script, fake).transfer([Posting("alice", "bob", 100, "USD/2")])
    assert len(script.requests) == 1 and fake.sleeps == []
    e = caught.value
    assert (e.status, e.code, e.message, e.request_id) == (status, code, "why", "req-1")
    assert e.transaction == {"id": "tx1"} and e.body["error"]["code"] == code
    assert code in str(e)


def test_conflict_carries_the_reason() -> None:
    script = Script(error(409, "hold_closed", headers={"Idempotent-Replayed": "true"}))
    with pytest.raises(Conflict) as caught:
        client(script).capture("h1")
    assert caught.value.reason == "hold_closed" and caught.value.replayed


def test_error_without_contract_body() -> None:
    fake = FakeTime()
    script = Script(httpx.Response(502, text="<html>bad gateway</html>"), answer(200, {"count": 0, "head": "0"}))
    assert client(script, fake).chain().count == 0
    assert len(script.requests) == 2
    with pytest.raises(LedgerError) as caught:
        client(Script(httpx.Response(418, text="teapot"))).chain()
    assert (caught.value.status, caught.value.code) == (418, "http_418")


def test_deadline_bounds_the_retries() -> None:
    fake = FakeTime()
    script = Script(error(503, "unavailable"))
    ledger = client(script, fake, deadline_s=5, retry=RetryPolicy(base_s=0.1, cap_s=1))
    started = fake.now
    with pytest.raises(DeadlineExceeded) as caught:
        ledger.transfer([Posting("@world", "alice", 1, "PTS")])
    assert fake.now - started < 5  # never slept past the deadline
    assert 5 <= len(script.requests) <= 60
    e = caught.value
    assert isinstance(e.last_error, Unavailable) and e.__cause__ is e.last_error
    assert e.status == 503 and e.code == "deadline_exceeded"
    assert e.idempotency_key == script.keys()[0] and len(set(script.keys())) == 1


def test_retry_after_past_the_deadline_gives_up_at_once() -> None:
    fake = FakeTime()
    script = Script(error(429, "rate_limited", headers={"Retry-After": "120"}))
    with pytest.raises(DeadlineExceeded) as caught:
        client(script, fake, deadline_s=30).get_account("alice")
    assert fake.sleeps == [] and len(script.requests) == 1
    assert isinstance(caught.value.last_error, RateLimited) and caught.value.last_error.retry_after == 120


def test_deadline_in_real_time() -> None:
    script = Script(error(503, "unavailable"))
    ledger = LedgerClient(BASE, "k", "acme", transport=httpx.MockTransport(script), deadline_s=0.3,
                          retry=RetryPolicy(base_s=0.01, cap_s=0.05))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        ledger.get_account("alice")
    assert time.monotonic() - started < 0.5
    assert len(script.requests) >= 3


def test_attempt_timeout_never_passes_the_deadline() -> None:
    script = Script(answer(200, {"count": 0, "head": "0"}))
    client(script, deadline_s=2, timeout_s=10).chain()
    assert script.requests[0].extensions["timeout"]["read"] <= 2
    script = Script(answer(201, TX))
    client(script, timeout_s=1).transfer([Posting("@world", "a", 1, "PTS")], timeout_ms=8000)
    assert script.requests[0].extensions["timeout"]["read"] >= 8  # the server may wait that long


def test_transport_errors_of_reads_are_retried() -> None:
    fake = FakeTime()
    script = Script(httpx.RemoteProtocolError("reset"), httpx.ReadError("eof"), answer(200, {"address": "alice"}))
    assert client(script, fake).get_account("alice").address == "alice"
    assert len(script.requests) == 3


def test_webhook_creation_is_not_resent_once_it_may_have_arrived() -> None:
    script = Script(httpx.ReadTimeout("slow"), answer(201, {"id": "wh_1"}))
    with pytest.raises(LedgerError) as caught:
        client(script).create_webhook("https://example.com/x", ["*"])
    assert caught.value.code == "transport_error" and len(script.requests) == 1
    script = Script(httpx.ConnectError("refused"), answer(201, {"id": "wh_1", "secret": "whsec_1"}))
    assert client(script).create_webhook("https://example.com/x", ["*"]).secret == "whsec_1"
    assert len(script.requests) == 2


# --- pages --------------------------------------------------------------------------------------------------------


def paged(key: str, pages: list[list[dict[str, Any]]]) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        index = 0 if cursor is None else int(cursor.removeprefix("c"))
        next_cursor = f"c{index + 1}" if index + 1 < len(pages) else None
        return answer(200, {key: pages[index], "next_cursor": next_cursor})
    return handle


@pytest.mark.parametrize(("method", "key", "args"), [
    ("iter_transactions", "transactions", {"account": "alice", "limit": 2}),
    ("iter_accounts", "accounts", {"prefix": "c"}),
    ("iter_entries", "entries", {"address": "alice"}),
    ("iter_monitors", "monitors", {}),
    ("iter_deliveries", "deliveries", {"webhook_id": "wh_1"}),
])
def test_iterators_walk_every_page(method: str, key: str, args: dict[str, Any]) -> None:
    pages = [[{"id": "1", "address": "1", "transaction_id": "1", "event_id": "1"},
              {"id": "2", "address": "2", "transaction_id": "2", "event_id": "2"}],
             [{"id": "3", "address": "3", "transaction_id": "3", "event_id": "3"}], []]
    script = Script(paged(key, pages))
    items = list(getattr(client(script), method)(**args))
    assert [i.raw["id"] for i in items] == ["1", "2", "3"]
    assert [r.url.params.get("cursor") for r in script.requests] == [None, "c1", "c2"]
    for name, value in args.items():
        if name not in ("address", "webhook_id"):
            assert all(r.url.params.get(name) == str(value) for r in script.requests)


def test_list_gives_one_page() -> None:
    script = Script(paged("transactions", [[TX], [TX]]))
    page = client(script).list_transactions()
    assert len(page) == 1 and page.next_cursor == "c1" and isinstance(page.items[0], Transaction)
    second = client(script).list_transactions(cursor=page.next_cursor)
    assert second.next_cursor is None


def test_a_repeated_cursor_stops_the_walk() -> None:
    script = Script(lambda r: answer(200, {"entries": [{"transaction_id": "t"}], "next_cursor": "same"}))
    with pytest.raises(LedgerError, match="same cursor"):
        list(client(script).iter_entries("alice"))


# --- read your writes -----------------------------------------------------------------------------------------


def test_read_your_writes_sends_the_last_position() -> None:
    script = Script(answer(200, {"address": "alice"}), answer(201, TX), answer(200, {"address": "alice"}),
                    answer(200, {"webhooks": []}), answer(202, {"id": "tx2", "status": "pending", "position": "p2"}),
                    answer(200, {"address": "a"}))
    ledger = client(script, read_your_writes=True)
    ledger.get_account("alice")
    assert "min_position" not in script.params(0)  # nothing written yet
    ledger.transfer([Posting("@world", "alice", 100, "USD/2")])
    assert ledger.last_position == POSITION
    ledger.get_account("alice")
    assert script.params()["min_position"] == [POSITION]
    ledger.list_webhooks()  # a route that takes no min_position is not sent one
    assert "min_position" not in script.params()
    ledger.transfer([Posting("@world", "alice", 100, "USD/2")], wait=False)
    ledger.snapshot(["a"])
    assert script.params()["min_position"] == ["p2"]


def test_without_read_your_writes_only_explicit_positions() -> None:
    script = Script(answer(201, TX), answer(200, {"address": "alice"}))
    ledger = client(script)
    ledger.transfer([Posting("@world", "alice", 100, "USD/2")])
    assert ledger.last_position == POSITION
    ledger.get_account("alice")
    assert "min_position" not in script.params()
    ledger.get_account("alice", min_position="explicit", timeout_ms=50)
    assert script.params() == {"min_position": ["explicit"], "timeout_ms": ["50"]}


def test_batch_results_and_position() -> None:
    script = Script(answer(200, {"transactions": [
        {**TX, "id": "b1", "position": "p1"}, {**TX, "id": "b2", "position": "p2", "status": "rejected",
                                                "reason": "insufficient_funds"},
        {"id": "b3", "status": "pending", "position": "p3"}]}))
    ledger = client(script)
    results = ledger.batch([BatchItem([Posting("@world", "a", 1, "PTS")])] * 3, atomic=False)
    assert [type(r) for r in results] == [Transaction, Transaction, Pending]
    assert isinstance(results[1], Transaction) and results[1].reason == "insufficient_funds"
    assert ledger.last_position == "p3"
    assert body(script.requests[0])["atomic"] is False
    assert script.requests[0].headers["idempotency-key"]


def test_policy_position_comes_only_from_its_own_append() -> None:
    script = Script(answer(201, {"address": "alice", "position": "old-balance-change"}),
                    answer(202, {"id": "pol", "status": "pending", "position": "policy-position"}))
    ledger = client(script)
    assert isinstance(ledger.set_policy("alice", frozen=True), Account)
    assert ledger.last_position is None
    ledger.set_policy("alice", frozen=True, wait=False)
    assert ledger.last_position == "policy-position"


# --- the async client -------------------------------------------------------------------------------------------


def test_async_client_retries_with_one_key() -> None:
    async def go() -> None:
        fake = FakeTime()
        script = Script(error(429, "rate_limited", headers={"Retry-After": "2"}), httpx.ConnectError("x"),
                        error(503, "unavailable"), answer(201, {"id": "h1", "status": "held", "postings": [],
                                                                "position": "hp"}))
        async with aclient(script, fake, read_your_writes=True) as ledger:
            hold = await ledger.hold([Posting("alice", "shop", 5, "USD/2")])
            assert isinstance(hold, Hold) and hold.status == "held"
            assert len(set(script.keys())) == 1 and len(script.requests) == 4
            assert fake.sleeps[0] >= 2
            script.answers = [answer(200, {"address": "alice", "balances": {"USD/2": 5}})]
            account = await ledger.get_account("alice")
            assert account.balance("USD/2") == 5
            assert script.params()["min_position"] == ["hp"]
    asyncio.run(go())


def test_async_errors_and_deadline() -> None:
    async def go() -> None:
        fake = FakeTime()
        async with aclient(Script(error(409, "insufficient_funds")), fake) as ledger:
            with pytest.raises(Conflict) as caught:
                await ledger.transfer([Posting("alice", "bob", 5, "USD/2")])
            assert caught.value.code == "insufficient_funds" and fake.sleeps == []
        async with aclient(Script(error(503, "unavailable")), fake, deadline_s=3) as ledger:
            with pytest.raises(DeadlineExceeded):
                await ledger.chain()
            assert sum(fake.sleeps) < 3
    asyncio.run(go())


def test_async_iterators_walk_every_page() -> None:
    async def go() -> None:
        script = Script(paged("transactions", [[{"id": "1"}], [{"id": "2"}], [{"id": "3"}]]))
        async with aclient(script) as ledger:
            ids = [tx.id async for tx in ledger.iter_transactions(status="committed")]
        assert ids == ["1", "2", "3"]
        assert [r.url.params.get("cursor") for r in script.requests] == [None, "c1", "c2"]
    asyncio.run(go())


def test_sync_and_async_have_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}
    assert public(LedgerClient) - {"close"} == public(AsyncLedgerClient) - {"aclose"}
    assert LedgerClient.transfer.__doc__ == AsyncLedgerClient.transfer.__doc__
    assert "idempotency_key" in str(__import__("inspect").signature(LedgerClient.transfer))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        LedgerClient("ledger.test", "k", "acme")
    with pytest.raises(ValueError):
        LedgerClient(BASE, "", "acme")
    ledger = LedgerClient(BASE + "/", "k", "acme", transport=httpx.MockTransport(Script(answer(200, {}))))
    assert repr(ledger) == "LedgerClient('http://ledger.test', tenant='acme')"
    with ledger:
        pass
