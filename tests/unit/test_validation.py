from __future__ import annotations

import pytest

from ledger.bodies import parse_body
from ledger.errors import InvalidRequest
from ledger.validation import (
    AMOUNT_MAX,
    check_address,
    check_amount,
    check_asset,
    check_tenant,
    parse_metadata,
    parse_postings,
)


def p(source: str = "@world", destination: str = "alice", amount: object = 1, asset: str = "USD/2") -> dict:
    return {"source": source, "destination": destination, "amount": amount, "asset": asset}


@pytest.mark.parametrize("tenant", ["a", "acme", "a-b_c9", "0" + "x" * 62])
def test_valid_tenants(tenant: str) -> None:
    assert check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "A", "-a", "_a", "a" * 64, "acme\n", "acmé", "a b", "a/../b", "a\x00", 7, None])
def test_invalid_tenants(tenant: object) -> None:
    with pytest.raises(InvalidRequest):
        check_tenant(tenant)


@pytest.mark.parametrize("address", ["alice", "@world", "users:1:wallet", "a.b-c_d", "x" * 128, "@" + "x" * 127])
def test_valid_addresses(address: str) -> None:
    assert check_address(address) == address


@pytest.mark.parametrize("address", ["", "@", "x" * 129, "a b", "a/b", "ali\u0441e", "a\x00", "a'; DROP TABLE x;--", 1])
def test_invalid_addresses(address: object) -> None:
    with pytest.raises(InvalidRequest):
        check_address(address)


@pytest.mark.parametrize("asset", ["USD", "USD/2", "BTC/8", "PTS", "A", "X/18", "ABCDEFGHIJKLMNOP/0"])
def test_valid_assets(asset: str) -> None:
    assert check_asset(asset) == asset


@pytest.mark.parametrize("asset", ["usd", "USD/19", "USD/", "USD/02x", "1USD", "ABCDEFGHIJKLMNOPQ", "USD/-1", ""])
def test_invalid_assets(asset: str) -> None:
    with pytest.raises(InvalidRequest):
        check_asset(asset)


@pytest.mark.parametrize("amount", [0, -1, AMOUNT_MAX + 1, 1.0, 1.5, "1", True, None])
def test_invalid_amounts(amount: object) -> None:
    with pytest.raises(InvalidRequest):
        check_amount(amount)


def test_amount_bounds_are_inclusive() -> None:
    assert check_amount(1) == 1
    assert check_amount(AMOUNT_MAX) == AMOUNT_MAX


def test_postings_count_bounds() -> None:
    assert len(parse_postings([p()] * 128)) == 128
    for bad in ([], [p()] * 129, "x", None):
        with pytest.raises(InvalidRequest):
            parse_postings(bad)


def test_posting_to_itself_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="differ"):
        parse_postings([p("alice", "alice")])


def test_posting_with_unknown_or_missing_field_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="unknown"):
        parse_postings([{**p(), "memo": "x"}])
    with pytest.raises(InvalidRequest, match="missing"):
        parse_postings([{"source": "a", "destination": "b", "amount": 1}])


def test_metadata_must_be_flat_strings_within_4_kib() -> None:
    assert parse_metadata({"a": "b"}) == {"a": "b"}
    assert parse_metadata(None) == {}
    for bad in ({"a": 1}, {"a": {"b": "c"}}, ["a"], {"k": "x" * 4100}):
        with pytest.raises(InvalidRequest):
            parse_metadata(bad)


def test_body_rejects_unknown_fields_and_requires_postings() -> None:
    with pytest.raises(InvalidRequest):
        parse_body({"postings": [p()], "extra": 1}, id="x", tenant="t", idempotency_key=None)
    with pytest.raises(InvalidRequest):
        parse_body({}, id="x", tenant="t", idempotency_key=None)
    with pytest.raises(InvalidRequest):
        parse_body({"postings": [p()]}, id="x", tenant="t", idempotency_key="k" * 256)
    body = parse_body({"postings": [p()], "reference": "r"}, id="x", tenant="t", idempotency_key="k")
    assert (body.reference, body.idempotency_key) == ("r", "k")
