"""The SDK against a real, running ledger API (skipped unless LEDGER_SDK_LIVE_URL and LEDGER_SDK_ADMIN_TOKEN are set).

    cd client
    LEDGER_SDK_LIVE_URL=http://127.0.0.1:8000 LEDGER_SDK_ADMIN_TOKEN=... ../.venv/bin/pytest -q tests/test_live.py

Each run creates a tenant of its own (and its keys) through the admin API, so it can run against any stack,
repeatedly, next to other tests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from wallet_ledger import (
    Account,
    Assertion,
    AsyncLedgerClient,
    BatchItem,
    Conflict,
    Forbidden,
    Hold,
    InvalidRequest,
    LedgerClient,
    Monitor,
    NotFound,
    Posting,
    Transaction,
    Unauthorized,
)

URL = os.environ.get("LEDGER_SDK_LIVE_URL", "").rstrip("/")
ADMIN_TOKEN = os.environ.get("LEDGER_SDK_ADMIN_TOKEN", "")
CLIENT_DIR = Path(__file__).resolve().parent.parent
USD = "USD/2"

pytestmark = pytest.mark.skipif(not (URL and ADMIN_TOKEN),
                                reason="needs LEDGER_SDK_LIVE_URL and LEDGER_SDK_ADMIN_TOKEN (a running API)")


@dataclass(frozen=True)
class Live:
    tenant: str
    key: str
    read_key: str


def _admin(method: str, path: str, json: object) -> dict[str, object]:
    response = httpx.request(method, URL + path, json=json, timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 201, (path, response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict)
    return body


@pytest.fixture(scope="module")
def live() -> Live:
    tenant = f"sdk-{uuid.uuid4().hex[:12]}"
    _admin("POST", "/v1/tenants", {"id": tenant, "name": "SDK live tests"})
    key = _admin("POST", f"/v1/tenants/{tenant}/keys", {"scopes": ["read", "write"]})["key"]
    read_key = _admin("POST", f"/v1/tenants/{tenant}/keys", {"scopes": ["read"]})["key"]
    assert isinstance(key, str) and isinstance(read_key, str)
    return Live(tenant, key, read_key)


@pytest.fixture
def ledger(live: Live) -> Iterator[LedgerClient]:
    with LedgerClient(URL, live.key, live.tenant, read_your_writes=True) as client:
        yield client


def names(*who: str) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"acct:{run}:{w}" for w in who]


def funded(ledger: LedgerClient, address: str, amount: int = 10_000) -> Transaction:
    tx = ledger.transfer([Posting("@world", address, amount, USD)])
    assert isinstance(tx, Transaction) and tx.status == "committed"
    return tx


def test_transfers_and_reads(ledger: LedgerClient) -> None:
    alice, bob = names("alice", "bob")
    deposit = funded(ledger, alice)
    payment = ledger.transfer([Posting(alice, bob, 2_500, USD)], metadata={"note": "dinner"}, reference="pay-1")
    assert isinstance(payment, Transaction) and payment.committed
    assert payment.balances_after == {alice: {USD: 7_500}, bob: {USD: 2_500}}
    assert payment.position and len(payment.hash or "") == 64 and len(payment.previous_hash or "") == 64

    got = ledger.get_transaction(payment.id)
    assert (got.id, got.status, got.metadata, got.reference) == (payment.id, "committed", {"note": "dinner"}, "pay-1")
    assert got.postings == (Posting(alice, bob, 2_500, USD),)

    account = ledger.get_account(alice)
    assert isinstance(account, Account)
    assert account.balances == {USD: 7_500} and account.available == {USD: 7_500} and account.held == {USD: 0}
    assert account.version == 2 and not account.frozen

    snapshot = ledger.snapshot([bob, alice])
    assert [a.address for a in snapshot] == [bob, alice] and snapshot.position
    assert sum(a.balance(USD) for a in snapshot) == 10_000

    prefix = alice.rsplit(":", 1)[0] + ":"
    sums = ledger.balances(prefix)
    assert sums.balances == {USD: 10_000} and sums.accounts == 2
    assert ledger.balances().balances.get(USD) == 0  # every balance of the tenant, @world included

    assert [t.id for t in ledger.iter_transactions(account=alice, limit=1)] == [payment.id, deposit.id]
    page = ledger.list_transactions(account=alice, limit=1)
    assert len(page) == 1 and page.next_cursor is not None
    assert [t.id for t in ledger.iter_transactions(reference="pay-1")] == [payment.id]
    assert [t.id for t in ledger.iter_transactions(account=alice, metadata={"note": "dinner"})] == [payment.id]
    assert [a.address for a in ledger.iter_accounts(prefix, limit=1)] == sorted([alice, bob])

    entries = list(ledger.iter_entries(alice, limit=1))
    assert [(e.transaction_id, e.amount, e.balance_after) for e in entries] == [
        (payment.id, -2_500, 7_500), (deposit.id, 10_000, 10_000)]

    csv = ledger.export_csv(alice)
    lines = csv.strip().splitlines()
    assert lines[0] == "transaction_id,asset,amount,balance_after,committed_at"
    assert len(lines) == 3 and lines[1].startswith(f"{payment.id},{USD},-2500,7500,")

    statement = ledger.statement(alice, USD)
    assert (statement.opening, statement.credits, statement.debits, statement.closing, statement.count) == (
        0, 10_000, 2_500, 7_500, 2)
    assert statement.opening + statement.credits - statement.debits == statement.closing
    assert statement.from_ is not None and statement.until is not None

    chain = ledger.chain()
    assert chain.count >= 2 and len(chain.head) == 64


def test_rejections_are_typed(ledger: LedgerClient, live: Live) -> None:
    alice, bob = names("alice", "bob")
    funded(ledger, alice, 100)
    with pytest.raises(Conflict) as caught:
        ledger.transfer([Posting(alice, bob, 101, USD)])
    assert caught.value.status == 409 and caught.value.code == "insufficient_funds"
    assert caught.value.transaction is not None and caught.value.transaction["status"] == "rejected"
    with pytest.raises(Conflict) as caught:
        ledger.transfer([Posting(alice, bob, 1, USD)], if_version={alice: 999})
    assert caught.value.code == "version_conflict"
    with pytest.raises(Conflict) as caught:
        ledger.transfer([Posting(alice, bob, 50, USD)], assert_=[Assertion(alice, USD, min=60)])
    assert caught.value.code == "assertion_failed"
    with pytest.raises(NotFound):
        ledger.get_transaction("no-such-transaction")
    with pytest.raises(NotFound):
        ledger.capture("no-such-hold")
    with pytest.raises(InvalidRequest) as invalid:
        ledger.transfer([Posting(alice, bob, 1, "not an asset")])
    assert invalid.value.status == 422 and invalid.value.code
    with LedgerClient(URL, "wrong-key", live.tenant) as stranger, pytest.raises(Unauthorized):
        stranger.get_account(alice)
    with LedgerClient(URL, live.read_key, live.tenant) as reader:
        assert reader.get_account(alice).balance(USD) == 100
        with pytest.raises(Forbidden):
            reader.transfer([Posting("@world", alice, 1, USD)])


def test_idempotency(ledger: LedgerClient) -> None:
    (alice,) = names("alice")
    key = f"deposit-{uuid.uuid4().hex}"
    first = ledger.transfer([Posting("@world", alice, 500, USD)], idempotency_key=key)
    again = ledger.transfer([Posting("@world", alice, 500, USD)], idempotency_key=key)
    assert isinstance(first, Transaction) and isinstance(again, Transaction)
    assert again.replayed and again.id == first.id and not first.replayed
    assert ledger.get_account(alice).balance(USD) == 500  # applied once
    with pytest.raises(Conflict) as caught:
        ledger.transfer([Posting("@world", alice, 501, USD)], idempotency_key=key)
    assert caught.value.code == "idempotency_conflict"


def test_holds_capture_void(ledger: LedgerClient) -> None:
    alice, shop = names("alice", "shop")
    funded(ledger, alice, 1_000)
    hold = ledger.hold([Posting(alice, shop, 700, USD)], expires_in_s=3600)
    assert isinstance(hold, Hold) and hold.status == "held" and hold.expires_at is not None
    account = ledger.get_account(alice)
    assert (account.balance(USD), account.held[USD], account.available[USD]) == (1_000, 700, 300)
    with pytest.raises(Conflict) as caught:
        ledger.hold([Posting(alice, shop, 301, USD)])
    assert caught.value.code == "insufficient_funds"

    capture = ledger.capture(hold.id, amount=450)
    assert isinstance(capture, Transaction) and capture.captures == hold.id
    assert capture.postings == (Posting(alice, shop, 450, USD),)
    assert ledger.get_hold(hold.id).status == "captured"
    with pytest.raises(Conflict) as caught:
        ledger.capture(hold.id)
    assert caught.value.code == "hold_closed"
    account = ledger.get_account(alice)
    assert (account.balance(USD), account.held[USD], account.available[USD]) == (550, 0, 550)

    second = ledger.hold([Posting(alice, shop, 100, USD)])
    voided = ledger.void(second.id)
    assert isinstance(voided, Hold) and voided.status == "voided"
    with pytest.raises(Conflict) as caught:
        ledger.void(second.id)
    assert caught.value.code == "hold_closed"
    assert ledger.get_account(alice).available[USD] == 550


def test_reversals(ledger: LedgerClient) -> None:
    alice, bob = names("alice", "bob")
    funded(ledger, alice, 1_000)
    payment = ledger.transfer([Posting(alice, bob, 300, USD)])
    part = ledger.reverse(payment.id, 100)
    assert isinstance(part, Transaction) and part.reverses == payment.id
    assert part.postings == (Posting(bob, alice, 100, USD),)
    assert ledger.get_transaction(payment.id).reversed == 100
    with pytest.raises(Conflict) as caught:
        ledger.reverse(payment.id, 201)
    assert caught.value.code == "amount_exceeds_remaining"
    ledger.reverse(payment.id)
    assert ledger.get_account(bob).balance(USD) == 0
    with pytest.raises(Conflict) as caught:
        ledger.reverse(payment.id)
    assert caught.value.code == "not_reversible"


def test_batches(ledger: LedgerClient) -> None:
    alice, bob, carol = names("alice", "bob", "carol")
    results = ledger.batch([BatchItem([Posting("@world", alice, 100, USD)]),
                            {"postings": [Posting(alice, bob, 60, USD)], "reference": "batch-item"}])
    assert [r.status for r in results] == ["committed", "committed"]
    rejected = ledger.batch([BatchItem([Posting(alice, carol, 10, USD)]), BatchItem([Posting(bob, carol, 61, USD)])])
    assert [r.status for r in rejected] == ["rejected", "rejected"]
    assert all(isinstance(r, Transaction) and r.reason == "insufficient_funds" for r in rejected)
    assert ledger.get_account(carol).balance(USD) == 0


def test_policies(ledger: LedgerClient) -> None:
    alice, bob = names("alice", "bob")
    account = ledger.set_policy(alice, overdraft_limit={USD: 500}, metadata={"tier": "gold"})
    assert isinstance(account, Account) and account.address == alice
    overdrawn = ledger.transfer([Posting(alice, bob, 400, USD)])
    assert overdrawn.status == "committed"
    account = ledger.get_account(alice)
    assert account.balance(USD) == -400 and account.overdraft_limit == {USD: 500}
    assert account.metadata == {"tier": "gold"}
    with pytest.raises(Conflict) as caught:
        ledger.transfer([Posting(alice, bob, 101, USD)])
    assert caught.value.code == "insufficient_funds"
    ledger.set_policy(alice, overdraft_limit={USD: 500}, frozen=True)
    with pytest.raises(Conflict) as caught:
        ledger.transfer([Posting(alice, bob, 1, USD)])
    assert caught.value.code == "account_frozen"
    assert ledger.get_account(alice).frozen


def test_monitors(ledger: LedgerClient) -> None:
    (alice,) = names("alice")
    monitor = ledger.create_monitor(alice, USD, below=100)
    assert isinstance(monitor, Monitor) and monitor.status == "active" and monitor.below == 100
    assert ledger.get_monitor(monitor.id).account == alice
    assert monitor.id in [m.id for m in ledger.iter_monitors(limit=1)]
    assert monitor.id in [m.id for m in ledger.list_monitors(limit=500)]
    removed = ledger.delete_monitor(monitor.id)
    assert isinstance(removed, Monitor) and removed.status == "removed"
    assert monitor.id not in [m.id for m in ledger.iter_monitors()]
    assert monitor.id in [m.id for m in ledger.iter_monitors(removed=True)]
    with pytest.raises(NotFound):
        ledger.delete_monitor(monitor.id)


def test_webhooks(ledger: LedgerClient) -> None:
    try:
        webhook = ledger.create_webhook(f"http://localhost:9/x-{uuid.uuid4().hex[:6]}", ["transaction.committed"])
    except InvalidRequest as e:  # this server does not allow localhost (LEDGER_WEBHOOK_ALLOW_HOSTS)
        assert (e.status, e.code) == (422, "url_not_allowed")
        assert isinstance(ledger.list_webhooks(), list)
        with pytest.raises(NotFound):
            ledger.get_webhook("wh_nosuch")
        return
    assert webhook.secret and webhook.secret.startswith("whsec_")
    assert webhook.events == ("transaction.committed",)
    listed = {w.id: w for w in ledger.list_webhooks()}
    assert webhook.id in listed and listed[webhook.id].secret is None
    assert ledger.get_webhook(webhook.id).url == webhook.url
    assert isinstance(list(ledger.iter_deliveries(webhook.id, limit=5)), list)
    assert isinstance(ledger.deliveries(webhook.id).items, tuple)
    deleted = ledger.delete_webhook(webhook.id)
    assert deleted.id == webhook.id and deleted.deleted_at is not None
    assert webhook.id not in {w.id for w in ledger.list_webhooks()}


def test_read_your_writes(live: Live) -> None:
    (alice,) = names("alice")
    with LedgerClient(URL, live.key, live.tenant, read_your_writes=True) as ledger:
        for _ in range(5):
            pending = ledger.transfer([Posting("@world", alice, 10, USD)], wait=False)
            assert pending.status == "pending" and ledger.last_position == pending.position
        assert ledger.get_account(alice).balance(USD) == 50  # the reads waited for the writes


def test_async_client(live: Live) -> None:
    alice, bob = names("alice", "bob")

    async def go() -> None:
        async with AsyncLedgerClient(URL, live.key, live.tenant, read_your_writes=True) as ledger:
            await ledger.transfer([Posting("@world", alice, 1_000, USD)])
            payments = await asyncio.gather(*(ledger.transfer([Posting(alice, bob, 100, USD)]) for _ in range(3)))
            assert all(p.status == "committed" for p in payments)
            assert (await ledger.get_account(bob)).balance(USD) == 300
            assert len([e async for e in ledger.iter_entries(bob, limit=2)]) == 3
            with pytest.raises(Conflict) as caught:
                await ledger.transfer([Posting(alice, bob, 10_000, USD)])
            assert caught.value.code == "insufficient_funds"
    asyncio.run(go())


def test_quickstart_runs(live: Live) -> None:
    env = {**os.environ, "LEDGER_URL": URL, "LEDGER_API_KEY": live.key, "LEDGER_TENANT": live.tenant,
           "PYTHONPATH": os.pathsep.join([str(CLIENT_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, str(CLIENT_DIR / "examples" / "quickstart.py")], env=env, cwd=CLIENT_DIR,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "overspend refused: insufficient_funds" in done.stdout
    assert "balance 7050, available 7050" in done.stdout
