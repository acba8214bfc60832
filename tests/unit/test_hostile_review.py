"""Issue 21's defects found from outside, proven on the pure pieces: duplicate JSON keys, dot-only addresses
and ids, duplicate keys in a batch, a batch's own idempotency key in the fold, strict query parameters and
headers, and RFC 3339 times."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from api.inputs import check_params, header, parse_time
from ledger.batch import BatchRows, Record, decode_all
from ledger.bodies import parse_items
from ledger.codec import decode_json, decode_request, encode_request
from ledger.errors import InvalidRequest, MalformedJson
from ledger.fold import fold_batch
from ledger.memory import Ledger
from ledger.placement import partition_for
from ledger.reasons import IDEMPOTENCY_CONFLICT
from ledger.requests import (
    BatchRequest,
    Posting,
    TransferRequest,
)
from ledger.validation import check_address, check_id

TENANT = "acme"
PARTITIONS = 4
HOME = partition_for(TENANT.encode(), PARTITIONS)
POSTING = {"source": "@world", "destination": "alice", "amount": 5, "asset": "USD/2"}


# --- (6) duplicate keys in a JSON object ----------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b'{"amount": 1, "amount": 5}',
    b'{"a": {"b": 1, "b": 1}}',
    b'[{"x": ":", "y": 1, "y": 2}]',
    b'{"k\\u0061": 1, "ka": 2}',  # the same key, one of them escaped
])
def test_an_object_that_repeats_a_key_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_json(raw)
    assert not isinstance(refused.value, MalformedJson)  # 422, not 400: it is JSON, and ambiguous


@pytest.mark.parametrize("raw", [b'{"a": "x:y", "b": {"c": ":"}}', b'{"t": "\\":\\"", "u": 1}', b"[1, 2]", b'"a:b"',
                                 b"{}"])
def test_colons_inside_strings_are_not_mistaken_for_members(raw: bytes) -> None:
    assert decode_json(raw) == orjson.loads(raw)


@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=20))
def test_any_json_without_repeated_keys_decodes_as_orjson_does(value: object) -> None:
    raw = orjson.dumps(value)
    assert decode_json(raw) == orjson.loads(raw)


def test_a_record_on_the_topic_that_repeats_a_key_is_invalid() -> None:
    raw = (b'{"v":1,"id":"t1","tenant":"acme","postings":[{"source":"@world","destination":"alice",'
           b'"amount":1,"amount":5,"asset":"USD/2"}]}')
    with pytest.raises(InvalidRequest):
        decode_request(b"acme", raw)


# --- (11) addresses and ids made only of dots ----------------------------------------------------------

@pytest.mark.parametrize("value", [".", "..", "...."])
def test_dot_only_addresses_and_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequest):
        check_address(value)
    with pytest.raises(InvalidRequest):
        check_id(value)


@pytest.mark.parametrize("value", ["a.", ".a", "a..b", "@."])
def test_dots_beside_other_characters_stay_valid(value: str) -> None:
    assert check_address(value) == value


# --- (2) two items of one batch with the same key ------------------------------------------------------

def test_a_batch_whose_items_share_a_key_is_refused() -> None:
    items = [{"postings": [POSTING], "idempotency_key": "k"}, {"postings": [POSTING], "idempotency_key": "k"}]
    with pytest.raises(InvalidRequest, match="idempotency keys must differ"):
        parse_items(items, TENANT, ["a", "b"])
    with pytest.raises(InvalidRequest, match="idempotency keys must differ"):
        parse_items(items[:1], TENANT, ["a"], batch_key="k")  # nor may an item take the batch's own key


# --- (1) a batch's own key, decided in the fold --------------------------------------------------------

def batch(offset: int, batch_id: str, ids: list[str], key: str | None, amount: int = 5,
          atomic: bool = True) -> Record:
    items = tuple(TransferRequest(id=i, tenant=TENANT, postings=(Posting("@world", "alice", amount,
                                                                         "USD/2"),)) for i in ids)
    value = encode_request(BatchRequest(batch_id, TENANT, items, key, atomic))
    return Record(HOME, offset, TENANT.encode(), value, 1_700_000_000_000)


def fold(ledger: Ledger, records: list[Record]) -> BatchRows:
    return fold_batch(ledger, records, decode_all(records, PARTITIONS), BatchRows())


@pytest.mark.parametrize("atomic", [True, False])
def test_a_repeated_batch_key_replays_every_item_and_moves_nothing_again(atomic: bool) -> None:
    ledger = Ledger(tenants={TENANT: True})
    rows = fold(ledger, [batch(0, "b1", ["a1", "a2"], "pay-42", atomic=atomic),
                         batch(1, "b2", ["x1", "x2"], "pay-42", atomic=atomic),
                         batch(2, "b3", ["y1", "y2"], "pay-42", atomic=atomic)])
    assert ledger.balance((TENANT, "alice", "USD/2")) == 10
    assert [t[1] for t in rows.transactions] == ["a1", "a2"]
    assert [(r[1], r[2]) for r in rows.replays] == [("x1", "a1"), ("x2", "a2"), ("y1", "a1"), ("y2", "a2")]
    assert [(b[1], b[2], b[7]) for b in rows.batches] == [("b1", "pay-42", ["a1", "a2"])]


def test_a_batch_key_reused_with_another_body_is_a_conflict_and_stays_the_originals() -> None:
    ledger = Ledger(tenants={TENANT: True})
    rows = fold(ledger, [batch(0, "b1", ["a1"], "pay-42"), batch(1, "b2", ["x1"], "pay-42", amount=6)])
    assert ledger.balance((TENANT, "alice", "USD/2")) == 5
    assert [(t[1], t[2], t[3]) for t in rows.transactions] == [("a1", "committed", None),
                                                               ("x1", "rejected", IDEMPOTENCY_CONFLICT)]
    assert ledger.by_key[(TENANT, "pay-42")].transaction_id == "b1"


def test_a_key_bound_by_one_request_conflicts_with_a_batch_and_back() -> None:
    ledger = Ledger(tenants={TENANT: True})
    single = Record(HOME, 0, TENANT.encode(), orjson.dumps(
        {"v": 1, "id": "s1", "tenant": TENANT, "postings": [POSTING], "idempotency_key": "k1"}), 1_700_000_000_000)
    rows = fold(ledger, [single, batch(1, "b1", ["x1"], "k1"), batch(2, "b2", ["a1"], "k2")])
    later = Record(HOME, 3, TENANT.encode(), orjson.dumps(
        {"v": 1, "id": "s2", "tenant": TENANT, "postings": [POSTING], "idempotency_key": "k2"}), 1_700_000_000_000)
    rows = fold(ledger, [later])
    assert [(t[1], t[3]) for t in rows.transactions] == [("s2", IDEMPOTENCY_CONFLICT)]
    assert ledger.balance((TENANT, "alice", "USD/2")) == 10  # s1 and a1


def test_a_batch_without_a_key_keeps_its_bytes_on_the_log() -> None:
    items = (TransferRequest(id="a1", tenant=TENANT, postings=(Posting("@world", "alice", 5, "USD/2"),)),)
    assert encode_request(BatchRequest("b1", TENANT, items)) == orjson.dumps(
        {"v": 1, "kind": "batch", "id": "b1", "tenant": TENANT, "transactions": [
            {"id": "a1", "postings": [POSTING], "idempotency_key": None, "metadata": {}, "reference": None}]})


# --- (7) query parameters ------------------------------------------------------------------------------

def query(qs: str, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": qs.encode(),
                    "headers": headers or []})


@pytest.mark.parametrize("qs", ["wiat=true", "min_positon=x", "wait=true&wait=false", "metadata.g=1&metadata.g=2"])
def test_unknown_and_repeated_parameters_are_refused(qs: str) -> None:
    with pytest.raises(InvalidRequest):
        check_params(query(qs), frozenset({"wait", "min_position"}), ("metadata.",))


def test_known_parameters_pass_and_list_parameters_may_repeat() -> None:
    check_params(query("wait=true&metadata.a=1&metadata.b=2"), frozenset({"wait"}), ("metadata.",))
    check_params(query("address=a&address=b"), frozenset({"address"}), repeatable=frozenset({"address"}))


# --- (8) headers ---------------------------------------------------------------------------------------

def test_a_non_ascii_idempotency_key_is_read_as_utf8() -> None:
    assert header(query("", [(b"idempotency-key", "pay-é-💸".encode())]), b"idempotency-key") == "pay-é-💸"


@pytest.mark.parametrize("headers", [[(b"idempotency-key", b"a"), (b"idempotency-key", b"b")],
                                     [(b"idempotency-key", b"\xff\xfe")]])
def test_a_repeated_or_undecodable_header_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(InvalidRequest):
        header(query("", headers), b"idempotency-key")


# --- (12) RFC 3339 times -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["2026-01-31T12:00:00Z", "2026-01-31t12:00:00z", "2026-01-31T12:00:00.123456789Z",
                                 "2026-01-31T13:00:00+01:00"])
def test_rfc3339_times_are_accepted_in_either_case(raw: str) -> None:
    assert parse_time(raw, "at").replace(microsecond=0) == datetime(2026, 1, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["20260131T120000Z", "2026-01-31", "2026-01-31T12:00Z", "2026-01-31T12:00:00",
                                 "2026-W05-6T12:00:00Z", "2026-01-31 12:00:00Z", "2026-01-31T12:00:00+0100",
                                 "2026-02-30T12:00:00Z"])
def test_other_iso8601_forms_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_time(raw, "at")


# --- found by the review of the fixes ------------------------------------------------------------------

def test_a_batchs_fingerprint_is_computed_once() -> None:
    # A repeat under a bound key compared the whole batch's digest once per item: quadratic in its size.
    items = tuple(TransferRequest(id=f"a{i}", tenant=TENANT, postings=(Posting("@world", "alice", 5, "USD/2"),))
                  for i in range(3))
    batch_request = BatchRequest("b1", TENANT, items, "k")
    assert batch_request.fingerprint() is batch_request.fingerprint()


def test_a_batch_refused_for_an_items_key_leaves_its_own_key_free() -> None:
    ledger = Ledger(tenants={TENANT: True})
    single = Record(HOME, 0, TENANT.encode(), orjson.dumps(
        {"v": 1, "id": "s1", "tenant": TENANT, "postings": [POSTING], "idempotency_key": "item-key"}),
        1_700_000_000_000)
    conflicting = BatchRequest("b1", TENANT, (TransferRequest(
        id="x1", tenant=TENANT, postings=(Posting("@world", "bob", 9, "USD/2"),), idempotency_key="item-key"),),
        "batch-key")
    fixed = BatchRequest("b2", TENANT, (TransferRequest(
        id="y1", tenant=TENANT, postings=(Posting("@world", "bob", 9, "USD/2"),)),), "batch-key")
    records = [single] + [Record(HOME, n + 1, TENANT.encode(), encode_request(b), 1_700_000_000_000)
                          for n, b in enumerate((conflicting, fixed))]
    rows = fold(ledger, records)
    assert [(t[1], t[2], t[3]) for t in rows.transactions] == [
        ("s1", "committed", None), ("x1", "rejected", IDEMPOTENCY_CONFLICT), ("y1", "committed", None)]
    assert ledger.by_key[(TENANT, "batch-key")].transaction_id == "b2"


def test_a_keyed_batch_whose_id_is_a_batchs_already_is_invalid_in_the_fold() -> None:
    # The database's key caught it before, by bisecting the projector's whole batch.
    ledger = Ledger(tenants={TENANT: True})
    rows = fold(ledger, [batch(0, "b1", ["a1"], "k1"), batch(1, "b1", ["a2"], "k2")])
    assert [t[1] for t in rows.transactions] == ["a1"] and len(rows.batches) == 1
    assert [e[1] for e in rows.invalid_events] == [1]
    assert ledger.balance((TENANT, "alice", "USD/2")) == 5


def test_a_partial_amount_on_several_postings_binds_no_key() -> None:
    ledger = Ledger(tenants={TENANT: True})
    placed = orjson.dumps({"v": 1, "kind": "hold", "id": "h1", "tenant": TENANT, "postings": [
        POSTING, {**POSTING, "destination": "bob"}]})
    capture = orjson.dumps({"v": 1, "kind": "capture", "id": "c1", "tenant": TENANT, "hold": "h1", "amount": 1,
                            "idempotency_key": "cap"})
    fold(ledger, [Record(HOME, n, TENANT.encode(), v, 1_700_000_000_000) for n, v in enumerate((placed, capture))])
    assert (TENANT, "cap") not in ledger.by_key
