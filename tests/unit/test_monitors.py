"""Balance monitors in the fold, pure: records that create and remove them, and the crossings a committed
transaction makes, decided from the log alone (a second fold of the same records finds the same)."""

from __future__ import annotations

import orjson
import pytest

from ledger.batch import BatchRows, Record, decode_all
from ledger.bodies import parse_body
from ledger.codec import decode_request, encode_request
from ledger.errors import InvalidRequest
from ledger.fold import fold_batch
from ledger.memory import Ledger
from ledger.placement import partition_for
from ledger.positions import PositionKey
from ledger.reasons import MONITORS_PER_ACCOUNT_MAX, MONITORS_PER_TENANT_MAX
from ledger.requests import (
    MONITOR,
    MonitorRequest,
    Watch,
)

PARTITIONS = 4
TENANT = "acme"
HOME = partition_for(TENANT.encode(), PARTITIONS)
KEY = PositionKey(bytes(range(32)))


def record(offset: int, value: dict[str, object]) -> Record:
    return Record(HOME, offset, TENANT.encode(), orjson.dumps({"v": 1, "tenant": TENANT, **value}),
                  1_700_000_000_000 + offset)


def move(offset: int, source: str, destination: str, amount: int) -> Record:
    return record(offset, {"id": f"tx{offset}", "postings": [
        {"source": source, "destination": destination, "amount": amount, "asset": "USD/2"}]})


def monitor(offset: int, account: str = "alice", **bounds: int) -> Record:
    return record(offset, {"kind": "monitor", "id": f"m{offset}", "account": account, "asset": "USD/2", **bounds})


def unmonitor(offset: int, target: str) -> Record:
    return record(offset, {"kind": "unmonitor", "id": f"u{offset}", "monitor": target})


def fold(records: list[Record], ledger: Ledger | None = None) -> tuple[Ledger, BatchRows]:
    ledger = ledger or Ledger(tenants={TENANT: True})
    return ledger, fold_batch(ledger, records, decode_all(records, PARTITIONS), BatchRows(positions=KEY))


def outcomes(rows: BatchRows) -> list[dict[str, object]]:
    return [orjson.loads(o[2]) for o in rows.outcomes]


def crossings(rows: BatchRows) -> list[tuple[str, str, str, int, int]]:
    return [(c["transaction_id"], c["monitor"], c["direction"], c["balance"], c["threshold"])
            for o in outcomes(rows) for c in o.get("crossings", [])]


def test_a_crossing_fires_once_per_crossing_in_each_direction() -> None:
    records = [move(0, "@world", "alice", 1000), monitor(1, below=500, above=2000),
               move(2, "alice", "@world", 400),   # 1000 -> 600: still >= 500
               move(3, "alice", "@world", 100),   # 600 -> 500: 500 is not below 500
               move(4, "alice", "@world", 1),     # 500 -> 499: crosses below
               move(5, "alice", "@world", 9),     # 499 -> 490: already below, nothing
               move(6, "@world", "alice", 1510),  # 490 -> 2000: not above 2000
               move(7, "@world", "alice", 1),     # 2000 -> 2001: crosses above
               move(8, "alice", "@world", 1600)]  # 2001 -> 401: crosses below again
    _, rows = fold(records)
    assert crossings(rows) == [("tx4", "m1", "below", 499, 500), ("tx7", "m1", "above", 2001, 2000),
                               ("tx8", "m1", "below", 401, 500)]
    assert [(m.id, m.account, m.below, m.above, m.active) for m in rows.monitors] == [("m1", "alice", 500, 2000,
                                                                                     True)]


def test_the_same_log_folded_again_finds_the_same_crossings_and_split_batches_too() -> None:
    records = [move(0, "@world", "alice", 1000), monitor(1, below=500), move(2, "alice", "bob", 600),
               move(3, "bob", "alice", 600), move(4, "alice", "bob", 700)]
    _, whole = fold(records)
    ledger, first = fold(records[:3])
    _, second = fold(records[3:], ledger)
    assert crossings(whole) == crossings(first) + crossings(second) == [("tx2", "m1", "below", 400, 500),
                                                                        ("tx4", "m1", "below", 300, 500)]
    assert [o[2] for o in whole.outcomes] == [o[2] for o in first.outcomes + second.outcomes]


def test_a_removed_monitor_fires_no_more_and_a_second_removal_is_not_found() -> None:
    records = [move(0, "@world", "alice", 1000), monitor(1, below=500), unmonitor(2, "m1"),
               move(3, "alice", "@world", 900), unmonitor(4, "m1"), unmonitor(5, "nope")]
    _, rows = fold(records)
    assert crossings(rows) == []
    decided = {o["id"]: (o["status"], o["reason"]) for o in outcomes(rows)}
    assert decided["u2"] == ("committed", None)
    assert decided["u4"] == decided["u5"] == ("rejected", "not_found")
    assert [(t, i) for t, i, _ in rows.monitor_removals] == [(TENANT, "m1")]


def test_a_monitor_changes_no_version_and_moves_no_money() -> None:
    ledger, rows = fold([move(0, "@world", "alice", 10), monitor(1, below=5)])
    assert ledger.version(TENANT, "alice") == 1
    assert [e.transaction_id for e in rows.entries] == ["tx0", "tx0"]
    assert outcomes(rows)[1]["kind"] == "monitor"


def test_an_account_takes_a_bounded_number_of_monitors() -> None:
    records = [monitor(i, below=i) for i in range(MONITORS_PER_ACCOUNT_MAX + 1)]
    _, rows = fold(records)
    last = outcomes(rows)[-1]
    assert (last["status"], last["reason"]) == ("rejected", "too_many_monitors")
    assert len(rows.monitors) == MONITORS_PER_ACCOUNT_MAX


def test_a_tenant_takes_a_bounded_number_of_monitors_and_a_removal_frees_one() -> None:
    records = [monitor(i, account=f"a{i % 100}", below=i) for i in range(MONITORS_PER_TENANT_MAX + 1)]
    records += [unmonitor(len(records), "m0"), monitor(len(records) + 1, account="a0", below=1)]
    _, rows = fold(records)
    decided = outcomes(rows)
    assert (decided[MONITORS_PER_TENANT_MAX]["status"], decided[MONITORS_PER_TENANT_MAX]["reason"]) == (
        "rejected", "too_many_monitors")
    assert [o["status"] for o in decided[-2:]] == ["committed", "committed"]


def test_a_monitor_is_removed_by_the_id_of_a_repeat_of_its_creation() -> None:
    again = record(2, {"kind": "monitor", "id": "m2", "account": "alice", "asset": "USD/2", "below": 5,
                       "idempotency_key": "k"})
    first = record(1, {"kind": "monitor", "id": "m1", "account": "alice", "asset": "USD/2", "below": 5,
                       "idempotency_key": "k"})
    _, rows = fold([first, again, unmonitor(3, "m2")])
    decided = {o["id"]: o for o in outcomes(rows)}
    assert decided["m2"]["original_id"] == "m1"
    assert (decided["u3"]["status"], rows.monitor_removals[0][1]) == ("committed", "m1")


def test_two_monitors_on_one_account_and_one_on_another_asset() -> None:
    other = record(2, {"kind": "monitor", "id": "m2", "account": "alice", "asset": "EUR/2", "below": 1})
    records = [move(0, "@world", "alice", 100), monitor(1, below=50), other, monitor(3, below=80),
               move(4, "alice", "@world", 60)]
    _, rows = fold(records)
    assert crossings(rows) == [("tx4", "m1", "below", 40, 50), ("tx4", "m3", "below", 40, 80)]


def test_a_transaction_with_two_legs_on_the_account_is_judged_before_and_after_it_whole() -> None:
    twice = record(2, {"id": "tx2", "postings": [
        {"source": "alice", "destination": "@world", "amount": 600, "asset": "USD/2"},
        {"source": "@world", "destination": "alice", "amount": 600, "asset": "USD/2"}]})
    _, rows = fold([move(0, "@world", "alice", 1000), monitor(1, below=500), twice])
    assert crossings(rows) == []  # 1000 -> 1000, though it passed 400 on the way


def test_the_wire_format_round_trips_and_refuses_what_it_should() -> None:
    request = MonitorRequest(id="m1", tenant=TENANT, watch=Watch("alice", "USD/2", -5, None))
    assert decode_request(TENANT.encode(), encode_request(request)) == request
    for body in ({"account": "alice", "asset": "USD/2"}, {"account": "alice", "asset": "USD/2", "below": 1.5},
                 {"account": "alice", "asset": "USD/2", "below": 2**63}, {"asset": "USD/2", "below": 1},
                 {"account": "alice", "asset": "USD/2", "below": True},
                 {"account": "alice", "asset": "USD/2", "below": 1, "extra": 1}):
        with pytest.raises(InvalidRequest):
            parse_body(body, id="m1", tenant=TENANT, idempotency_key=None, kind=MONITOR)
    value = orjson.dumps({"v": 1, "kind": "monitor", "id": "m1", "tenant": TENANT, "account": "alice",
                          "asset": "USD/2"})
    _, rows = fold([Record(HOME, 0, TENANT.encode(), value, 1_700_000_000_000)])
    assert (outcomes(rows)[0]["status"], outcomes(rows)[0]["reason"]) == ("rejected", "invalid")
