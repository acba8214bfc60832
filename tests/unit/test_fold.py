"""The fold of a batch, pure: placement, unreadable records, and records the database refused."""

from __future__ import annotations

import orjson
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from ledger.batch import BatchRows, Record, decode_all
from ledger.fold import POISON_AS_EVENT, POISON_AS_TRANSACTION, fold_batch
from ledger.memory import Ledger
from ledger.placement import partition_for
from ledger.positions import Position, PositionKey
from ledger.rows import TRANSACTION_COLUMNS

PARTITIONS = 4
TENANT = "acme"
HOME = partition_for(TENANT.encode(), PARTITIONS)
ERROR = TRANSACTION_COLUMNS.index("error")
KEY = PositionKey(bytes(range(32)))


def transfer(offset: int, partition: int = HOME, **fields: object) -> Record:
    value = {"v": 1, "id": f"tx{offset}", "tenant": TENANT, "postings": [
        {"source": "@world", "destination": "alice", "amount": 5, "asset": "USD/2"}], **fields}
    return Record(partition, offset, TENANT.encode(), orjson.dumps(value), 1_700_000_000_000)


def fold(records: list[Record], poison: dict[Position, tuple[int, str]] | None = None,  # type: ignore[no-untyped-def]
         positions: PositionKey | None = KEY):
    ledger = Ledger(tenants={TENANT: True})
    return ledger, fold_batch(ledger, records, decode_all(records, PARTITIONS), BatchRows(positions=positions),
                              poison=poison)


@given(st.binary(min_size=0, max_size=80), st.integers(min_value=1, max_value=64))
def test_placement_is_kafkas_default_partitioner(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every)


def test_a_record_off_its_partition_is_wrong_partition_and_writes_nothing_of_its_tenant() -> None:
    elsewhere = (HOME + 1) % PARTITIONS
    ledger, rows = fold([transfer(0, elsewhere)])
    assert rows.transactions == [] and rows.entries == [] and ledger.balances == {}
    assert [(e[0], e[1]) for e in rows.invalid_events] == [(elsewhere, 0)]
    outcome = orjson.loads(rows.outcomes[0][2])
    assert (outcome["status"], outcome["reason"], outcome["id"]) == ("rejected", "wrong_partition", "tx0")
    assert rows.next_offsets == {elsewhere: 1}


def test_a_poisoned_record_is_a_rejection_under_its_id_then_only_an_event() -> None:
    records = [transfer(0), transfer(1), transfer(2)]
    at = Position(HOME, 1)
    _, first = fold(records, {at: (POISON_AS_TRANSACTION, "value too long")})
    assert [(t[1], t[2], t[3]) for t in first.transactions] == [
        ("tx0", "committed", None), ("tx1", "rejected", "invalid"), ("tx2", "committed", None)]
    assert "value too long" in str(first.transactions[1][ERROR])
    assert len(first.entries) == 4
    _, second = fold(records, {at: (POISON_AS_EVENT, "value too long")})
    assert [t[1] for t in second.transactions] == ["tx0", "tx2"]
    assert [(e[0], e[1]) for e in second.invalid_events] == [(HOME, 1)]
    assert len(second.outcomes) == 3


def test_errors_are_stored_without_what_postgresql_refuses() -> None:
    _, rows = fold([transfer(0)], {Position(HOME, 0): (POISON_AS_TRANSACTION, "bad \x00 byte \ud800")})
    error = str(rows.transactions[0][ERROR])
    assert "\x00" not in error and "\ud800" not in error and "bad ? byte ?" in error


def test_every_record_gets_one_outcome_naming_it() -> None:
    records = [transfer(0), transfer(1, idempotency_key="k"), transfer(2, idempotency_key="k"),
               Record(HOME, 3, None, b"\xff", 0), Record(HOME, 4, TENANT.encode(), None, 0)]
    _, rows = fold(records)
    assert [orjson.loads(o[2])["record"] for o in rows.outcomes] == [f"{HOME}-{i}" for i in range(5)]


def test_an_outcome_carries_its_tenants_token_for_the_decided_request() -> None:
    records = [transfer(0, idempotency_key="k"), transfer(1, idempotency_key="k")]
    _, rows = fold(records)
    outcomes = [orjson.loads(o[2]) for o in rows.outcomes]
    # A repeat's position is its original's: the token a client of the tenant reads its write with.
    assert [KEY.parse(TENANT, o["position"]) for o in outcomes] == [Position(HOME, 0)] * 2
    assert [o["record"] for o in outcomes] == [f"{HOME}-0", f"{HOME}-1"]
    _, again = fold(records)
    assert again.outcomes == rows.outcomes  # byte for byte: what a replay of the fold publishes


def test_without_the_key_outcomes_are_counted_not_encoded() -> None:
    _, rows = fold([transfer(0), transfer(1)], positions=None)
    assert rows.outcomes == [] and rows.counts == {("committed", None): 2}
    assert len(rows.transactions) == 2


def test_a_timestamp_out_of_range_is_invalid_not_a_crash() -> None:
    far = Record(HOME, 0, TENANT.encode(), transfer(0).value, 2**62)
    _, rows = fold([far, transfer(1)])
    assert [(e[0], e[1]) for e in rows.invalid_events] == [(HOME, 0)]
    assert [t[1] for t in rows.transactions] == ["tx1"]


def test_an_expiry_names_the_hold_not_the_record_whose_time_closed_it() -> None:
    hold = {"v": 1, "kind": "hold", "id": "h1", "tenant": TENANT, "expires_in_s": 1, "postings": [
        {"source": "@world", "destination": "alice", "amount": 5, "asset": "USD/2"}]}
    records = [Record(HOME, 0, TENANT.encode(), orjson.dumps(hold), 1_000), transfer(1)._replace(timestamp_ms=5_000)]
    _, rows = fold(records)
    outcomes = [orjson.loads(o[2]) for o in rows.outcomes]
    assert [(o["id"], o["status"], o["record"]) for o in outcomes] == [
        ("h1", "committed", f"{HOME}-0"), ("h1", "expired", f"{HOME}-0"), ("tx1", "committed", f"{HOME}-1")]


def batch(offset: int, *amounts: int, source: str = "alice") -> Record:
    items = [{"id": f"b{offset}-{i}", "postings": [{"source": source, "destination": "bob", "amount": a,
                                                   "asset": "USD/2"}]} for i, a in enumerate(amounts)]
    value = {"v": 1, "kind": "batch", "id": f"b{offset}", "tenant": TENANT, "transactions": items}
    return Record(HOME, offset, TENANT.encode(), orjson.dumps(value), 1_700_000_000_000)


def test_an_atomic_batch_commits_all_or_rejects_all_with_the_first_reason() -> None:
    ledger, rows = fold([transfer(0), batch(1, 2, 3), batch(2, 1, 1, 1)])  # alice got 5
    decided = {t[1]: (t[2], t[3]) for t in rows.transactions}
    assert (decided["b1-0"], decided["b1-1"]) == (("committed", None), ("committed", None))
    assert [decided[f"b2-{i}"] for i in range(3)] == [("rejected", "insufficient_funds")] * 3
    assert ledger.balance((TENANT, "alice", "USD/2")) == 0
    assert ledger.balance((TENANT, "bob", "USD/2")) == 5
    # Items share their record's offset: their entries are told apart by leg.
    keys = [(e[1], e[3], e[4]) for e in rows.entries]
    assert len(keys) == len(set(keys)) == 6
