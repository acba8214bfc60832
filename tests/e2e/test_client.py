"""The producer client for services that append straight to Kafka, with outcomes from ledger.outcomes."""

from __future__ import annotations

import pytest

from client import LedgerProducer
from ledger.errors import InvalidRequest
from ledger.requests import Posting
from tests.conftest import Tenant
from tests.e2e.helpers import balances
from tests.stack import SETTINGS


async def test_submit_and_await_outcomes(tenant: Tenant) -> None:
    async with LedgerProducer(SETTINGS.kafka_bootstrap, topic=SETTINGS.transactions_topic,
                              outcomes_topic=SETTINGS.outcomes_topic, position_key=SETTINGS.position_key) as ledger:
        deposit = await ledger.submit(tenant.id, [Posting("@world", "alice", 100, "USD/2")], idempotency_key="d1",
                                      metadata={"source": "client"}, reference="r1")
        overdraft = await ledger.submit(tenant.id, [Posting("alice", "bob", 101, "USD/2")])
        repeat = await ledger.submit(tenant.id, [Posting("@world", "alice", 100, "USD/2")], idempotency_key="d1",
                                     metadata={"source": "client"}, reference="r1")
        first = await ledger.outcome(deposit, timeout_s=30)
        rejected = await ledger.outcome(overdraft, timeout_s=30)
        replayed = await ledger.outcome(repeat, timeout_s=30)
    # The outcome carries the token the tenant's API clients get; `record` the append's raw position.
    assert deposit.token is not None and repeat.token is not None
    assert (first["status"], first["position"], first["record"]) == ("committed", deposit.token,
                                                                      deposit.position.raw())
    assert (rejected["status"], rejected["reason"]) == ("rejected", "insufficient_funds")
    assert (replayed["status"], replayed["original_id"], replayed["position"]) == ("committed", deposit.id,
                                                                                   deposit.token)
    assert await balances(tenant.client, tenant.id, "alice", min_position=repeat.token) == {"USD/2": 100}


async def test_client_validates_before_sending() -> None:
    async with LedgerProducer(SETTINGS.kafka_bootstrap, follow_outcomes=False) as ledger:
        with pytest.raises(InvalidRequest):
            await ledger.submit("Not A Tenant", [Posting("@world", "alice", 1, "USD/2")])


async def test_the_client_sends_conditions(tenant: Tenant) -> None:
    async with LedgerProducer(SETTINGS.kafka_bootstrap, topic=SETTINGS.transactions_topic,
                              outcomes_topic=SETTINGS.outcomes_topic, position_key=SETTINGS.position_key) as ledger:
        fund = await ledger.submit(tenant.id, [Posting("@world", "ana", 30, "USD/2")])
        swept = await ledger.submit(tenant.id, [Posting("ana", "ben", 1_000, "USD/2")], amount_max=[0],
                                    if_version={"ana": 1}, asserts=[{"account": "ana", "asset": "USD/2", "max": 0}])
        stale = await ledger.hold(tenant.id, [Posting("ben", "cat", 5, "USD/2")], if_version={"ben": 0})
        batch = await ledger.submit_batch(tenant.id, [[Posting("ben", "cat", 5, "USD/2")]], atomic=True,
                                          conditions=[{"assert": [{"account": "ben", "asset": "USD/2", "min": 26}]}])
        outcomes = [await ledger.outcome(s, timeout_s=30) for s in (fund, swept, stale, *batch)]
        with pytest.raises(InvalidRequest):
            await ledger.submit(tenant.id, [Posting("@world", "ana", 1, "USD/2")], amount_max=[0])
        with pytest.raises(InvalidRequest):  # no posting 1: refused, never sent as an exact amount
            await ledger.submit(tenant.id, [Posting("ana", "ben", 1, "USD/2")], amount_max=[1])
        swept_batch = await ledger.submit_batch(tenant.id, [[Posting("ben", "dot", 500, "USD/2")]],
                                                conditions=[{"amount_max": [0]}])
        outcomes.append(await ledger.outcome(swept_batch[0], timeout_s=30))
    assert [(o["status"], o["reason"]) for o in outcomes] == [
        ("committed", None), ("committed", None), ("rejected", "version_conflict"),
        ("rejected", "assertion_failed"), ("committed", None)]
    assert await balances(tenant.client, tenant.id, "ben", min_position=swept_batch[0].token) == {"USD/2": 0}
    assert await balances(tenant.client, tenant.id, "dot") == {"USD/2": 30}
