from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.codec import decode_request, encode_request, salvage_identity
from ledger.errors import InvalidRequest
from ledger.requests import (
    Posting,
    TenantRequest,
    TransactionRequest,
    TransferRequest,
)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"v": 1, "id": "tx1", "tenant": "acme",
                            "postings": [{"source": "@world", "destination": "a", "amount": 5, "asset": "USD/2"}]}
    base.update(overrides)
    return base


RAW_POSTING = (
    b'{"v":1,"id":"x","tenant":"acme","postings":[{"source":"a","destination":"b","amount":AMOUNT,"asset":"X"}]}'
)


def test_round_trip() -> None:
    request = TransferRequest(id="tx1", tenant="acme", postings=(Posting("@world", "a", 5, "USD/2"),),
                              idempotency_key="k", metadata={"m": "v"}, reference="ref")
    assert decode_request(b"acme", encode_request(request)) == request
    create = TenantRequest("c1", "acme", "Acme Corp")
    assert decode_request(b"acme", encode_request(create)) == create


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"acme", b"{not json"),
        (b"acme", b"[]"),
        (b"acme", b"null"),
        (b"acme", None),
        (b"acme", orjson.dumps(event(v=2))),
        (b"acme", orjson.dumps(event(v=True))),
        (b"acme", orjson.dumps(event(v=1.0))),
        (b"other", orjson.dumps(event())),
        (None, orjson.dumps(event())),
        (b"acme", orjson.dumps({k: v for k, v in event().items() if k != "postings"})),
        (b"acme", orjson.dumps(event(extra=1))),
        (b"acme", orjson.dumps(event(id=""))),
        (b"acme", orjson.dumps(event(id="x" * 65))),
        (b"acme", orjson.dumps(event(postings=[{"source": "a", "destination": "a", "amount": 1, "asset": "X"}]))),
        (b"acme", orjson.dumps(event(postings=[{"source": "a", "destination": "b", "amount": 0, "asset": "X"}]))),
        (b"acme", RAW_POSTING.replace(b"AMOUNT", b"1.0")),
        (b"acme", RAW_POSTING.replace(b"AMOUNT", b"99999999999999999999")),
        (b"acme", RAW_POSTING.replace(b"AMOUNT", b"1e3")),
        (b"acme", orjson.dumps(event(postings=[{"source": "a", "destination": "b", "amount": 1, "asset": "usd"}]))),
        (b"acme", orjson.dumps(event(postings=[{"source": "a", "destination": "b", "amount": 1, "asset": "X"}] * 129))),
        (b"acme", orjson.dumps(event(metadata={"k": "v" * 5000}))),
        (b"acme", orjson.dumps(event(metadata={"k": 1}))),
        (b"acme", orjson.dumps(event(reference=5))),
        (b"acme", orjson.dumps(event(metadata={"n": "\u0000"}))),
        (b"acme", orjson.dumps(event(metadata={"a\u0000b": "v"}))),
        (b"acme", orjson.dumps(event(reference="r\u0000"))),
        (b"acme", orjson.dumps(event(idempotency_key="\u0000"))),
        (b"acme", b'{"v":1,"id":"x","tenant":"acme","postings":[],"metadata":{"k":"\\ud800"}}'),
        (b"acme", orjson.dumps(event(kind="lend"))),
        (b"acme", orjson.dumps(event(kind=1))),
        (b"acme", orjson.dumps({"v": 1, "kind": "tenant", "id": "c", "tenant": "acme"})),
        (b"acme", orjson.dumps({"v": 1, "kind": "tenant", "id": "c", "tenant": "acme", "name": "a\u0000"})),
        (b"acme", orjson.dumps({"v": 1, "kind": "tenant", "id": "c", "tenant": "acme", "name": "A", "x": 1})),
    ],
)
def test_malformed_events_are_invalid(key: bytes | None, value: bytes | None) -> None:
    with pytest.raises(InvalidRequest):
        decode_request(key, value)


def test_salvage_identity_only_when_tenant_and_id_are_sound() -> None:
    assert salvage_identity(b"acme", orjson.dumps(event(postings=[]))) == ("acme", "tx1")
    assert salvage_identity(b"other", orjson.dumps(event())) is None
    assert salvage_identity(b"acme", b"garbage") is None
    assert salvage_identity(b"acme", b"[1]") is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048), st.one_of(st.none(), st.binary(max_size=70)))
def test_no_byte_string_crashes_the_decoder(value: bytes, key: bytes | None) -> None:
    with contextlib.suppress(InvalidRequest):
        decode_request(key, value)
    salvage_identity(key, value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


EVENT_KEYS = ["v", "id", "tenant", "postings", "idempotency_key", "metadata", "reference", "x"]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(EVENT_KEYS), json_values, max_size=8))
def test_no_json_object_crashes_the_decoder(obj: dict[str, Any]) -> None:
    try:
        decode_request(b"acme", orjson.dumps(obj))
    except InvalidRequest:
        pass
    except orjson.JSONEncodeError:
        pass


fields = st.one_of(json_values, st.sampled_from(["@world", "alice", "USD/2", "", "a\u0000", 1, 2**63, -1]))
postings_values = st.lists(st.dictionaries(st.sampled_from(["source", "destination", "amount", "asset", "x"]),
                                           fields, max_size=5), max_size=4)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=300)
@given(postings_values, st.one_of(st.none(), st.dictionaries(st.text(max_size=5), fields, max_size=3)),
       st.sampled_from([None, "transfer", "tenant", "hold", 1]))
def test_postings_and_metadata_of_a_sound_envelope_decode_or_are_invalid(
        postings: list[dict[str, Any]], metadata: dict[str, Any] | None, kind: object) -> None:
    # The envelope (version, tenant, id) is sound, so the fuzzing reaches the postings and metadata.
    obj: dict[str, Any] = {"v": 1, "id": "tx1", "tenant": "acme", "postings": postings, "metadata": metadata}
    if kind is not None:
        obj["kind"] = kind
    try:
        raw = orjson.dumps(obj)
    except orjson.JSONEncodeError:  # integers past 64 bits: written as another producer's JSON library would
        raw = json.dumps(obj).encode()
    try:
        request = decode_request(b"acme", raw)
    except InvalidRequest:
        return
    assert isinstance(request, TransactionRequest)
    assert all(1 <= p.amount < 2**63 and p.source != p.destination for p in request.postings)
    assert decode_request(b"acme", encode_request(request)) == request
