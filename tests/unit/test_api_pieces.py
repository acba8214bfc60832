"""The API's pure pieces: `min_position`, cursors, and authentication from memory."""

from __future__ import annotations

import base64
import hashlib
import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from api import views
from api.auth import ApiKey, Forbidden, KeyStore, Unauthorized, new_secret_key
from api.inputs import (
    account_cursor_param,
    cursor_param,
    encode_account_cursor,
    encode_cursor,
    encode_transactions_cursor,
    position_param,
    transactions_cursor_param,
)
from ledger.errors import InvalidRequest
from ledger.positions import OFFSET_MAX, Position, PositionKey
from ledger.validation import ADDRESS_RE, ID_RE


def query(qs: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": qs.encode(), "headers": []})


KEY = PositionKey(bytes(32))
LISTINGS = ("entries", "transactions", "accounts")


@given(st.integers(0, 2**16 - 1), st.integers(0, 2**63 - 1))
def test_min_position_opens_a_token_of_the_paths_tenant(partition: int, offset: int) -> None:
    token = KEY.token("acme", Position(partition, offset))
    assert position_param(query(f"min_position={token}"), KEY, "acme") == Position(partition, offset)


@pytest.mark.parametrize("token", ["", "0-5", "%00", KEY.token("other", Position(0, 5)),
                                   PositionKey(bytes(range(32))).token("acme", Position(0, 5))])
def test_min_position_refuses_what_was_not_issued_to_the_tenant(token: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        position_param(query(f"min_position={token}"), KEY, "acme")
    assert caught.value.field == "min_position"


def test_no_min_position_waits_for_nothing() -> None:
    assert position_param(query(""), KEY, "acme") is None


URL_SAFE = set(string.ascii_letters + string.digits + "-_")
offsets = st.integers(0, OFFSET_MAX)
ids = st.from_regex(ID_RE, fullmatch=True)
addresses = st.from_regex(ADDRESS_RE, fullmatch=True)


def issued(listing: str, tenant: str = "acme", key: PositionKey = KEY) -> str:
    """A cursor of `listing` as the API hands it to `tenant`."""
    return {"entries": lambda: encode_cursor(key, tenant, 1_234_567, 3),
            "transactions": lambda: encode_transactions_cursor(key, tenant, 1_234_567, "tx-1"),
            "accounts": lambda: encode_account_cursor(key, tenant, "user:1")}[listing]()


def opened(listing: str, cursor: str, tenant: str = "acme") -> object:
    param = {"entries": cursor_param, "transactions": transactions_cursor_param,
             "accounts": account_cursor_param}[listing]
    return param(query(f"cursor={cursor}"), KEY, tenant)


def refused(listing: str, cursor: str, tenant: str = "acme") -> bool:
    with pytest.raises(InvalidRequest) as caught:
        opened(listing, cursor, tenant)
    assert (caught.value.code, caught.value.field) == ("invalid_request", "cursor")
    return True


@given(offsets, st.integers(0, 2**31 - 1))
def test_an_entries_cursor_round_trips(offset: int, leg: int) -> None:
    cursor = encode_cursor(KEY, "acme", offset, leg)
    assert set(cursor) <= URL_SAFE  # as it is in a query string, unescaped
    assert cursor_param(query(f"cursor={cursor}"), KEY, "acme") == (offset, leg)


@given(offsets, ids)
def test_a_transactions_cursor_round_trips(offset: int, id: str) -> None:
    cursor = encode_transactions_cursor(KEY, "acme", offset, id)
    assert set(cursor) <= URL_SAFE
    assert transactions_cursor_param(query(f"cursor={cursor}"), KEY, "acme") == (offset, id)


@given(addresses)
def test_an_accounts_cursor_round_trips(address: str) -> None:
    cursor = encode_account_cursor(KEY, "acme", address)
    assert set(cursor) <= URL_SAFE
    assert account_cursor_param(query(f"cursor={cursor}"), KEY, "acme") == address


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_cursor_shows_no_log_offset(listing: str) -> None:
    cursor = issued(listing)
    shown = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert "1234567" not in cursor and b"1234567" not in shown and (1_234_567).to_bytes(8) not in shown
    assert issued(listing) == cursor  # deterministic: the same page gives the same cursor


@pytest.mark.parametrize("listing", LISTINGS)
def test_another_tenants_cursor_is_refused(listing: str) -> None:
    assert refused(listing, issued(listing, tenant="other"))
    assert refused(listing, issued(listing), tenant="other")


@pytest.mark.parametrize(("issuer", "listing"), [(a, b) for a in LISTINGS for b in LISTINGS if a != b])
def test_another_listings_cursor_is_refused(issuer: str, listing: str) -> None:
    assert refused(listing, issued(issuer))


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_cursor_under_another_key_is_refused(listing: str) -> None:
    assert refused(listing, issued(listing, key=PositionKey(bytes(range(32)))))


@pytest.mark.parametrize("listing", LISTINGS)
def test_every_change_of_any_character_of_a_cursor_is_refused(listing: str) -> None:
    cursor = issued(listing)
    for at in range(len(cursor)):
        for replacement in sorted(URL_SAFE - {cursor[at]}):
            assert refused(listing, cursor[:at] + replacement + cursor[at + 1:])
    for changed in (cursor[:-1], cursor[1:], cursor + "A", cursor + "=", cursor + "%3D", f"%20{cursor}"):
        assert refused(listing, changed)


# Garbage, and cursors of the format before they were sealed ("5.1", "t.5.tx-1", "a.user:1" in base64).
@pytest.mark.parametrize("cursor", ["", "%00", "!!", "%%%", "YWJj", "bm90IGEgY3Vyc29y", "NS4x", "dC41LnR4LTE",
                                    "YS51c2VyOjE", "A" * 5000, "A" * 22, "-" * 40, "%C3%A9" * 30, "%ED%A0%80"])
@pytest.mark.parametrize("listing", LISTINGS)
def test_a_cursor_not_issued_is_refused(listing: str, cursor: str) -> None:
    assert refused(listing, cursor)


@given(st.text(max_size=120))
def test_any_text_as_a_cursor_is_refused_with_invalid_request_only(cursor: str) -> None:
    for listing in LISTINGS:
        with pytest.raises(InvalidRequest):
            opened(listing, quote(cursor))


def test_no_cursor_starts_past_every_row() -> None:
    assert cursor_param(query(""), KEY, "acme") == (2**63 - 1, 2**31 - 1)
    assert transactions_cursor_param(query(""), KEY, "acme") == (2**63 - 1, "")
    assert account_cursor_param(query(""), KEY, "acme") is None


def _store() -> tuple[KeyStore, str, str]:
    keys = KeyStore("admin-token")
    key_id, key, digest = new_secret_key()
    keys.keys[key_id] = ApiKey(key_id, "acme", digest, frozenset({"read"}), revoked=False)
    return keys, key_id, key


def test_the_admin_token_and_a_tenant_key_authenticate() -> None:
    keys, key_id, key = _store()
    admin = keys.authenticate("Bearer admin-token")
    assert admin.tenant is None and "admin" in admin.scopes
    principal = keys.authenticate(f"Bearer {key}")
    assert (principal.tenant, principal.key_id, principal.scopes) == ("acme", key_id, frozenset({"read"}))
    principal.require("acme", "read")
    with pytest.raises(Forbidden):
        principal.require("acme", "write")
    with pytest.raises(Forbidden):
        principal.require("other", "read")
    with pytest.raises(Forbidden):
        principal.require("acme", "admin")


@pytest.mark.parametrize("header", [None, "", "Basic x", "Bearer ", "Bearer admin-token2", "bearer admin-token",
                                    "Bearer lk_0000000000000000_secret", "Bearer lk__", "Bearer lk_x_y_z"])
def test_anything_else_is_unauthorized(header: str | None) -> None:
    keys, _, _ = _store()
    with pytest.raises(Unauthorized):
        keys.authenticate(header)


def test_a_revoked_key_or_a_wrong_secret_is_unauthorized() -> None:
    keys, key_id, key = _store()
    with pytest.raises(Unauthorized):
        keys.authenticate(f"Bearer {key[:-1]}{'A' if key[-1] != 'A' else 'B'}")
    stored = keys.keys[key_id]
    keys.keys[key_id] = ApiKey(key_id, stored.tenant, stored.secret_sha256, stored.scopes, revoked=True)
    with pytest.raises(Unauthorized):
        keys.authenticate(f"Bearer {key}")
    assert hashlib.sha256(key.split("_", 2)[2].encode()).digest() == stored.secret_sha256


def test_rows_are_shown_with_the_tenants_tokens() -> None:
    row = {"id": "tx1", "status": "committed", "postings": [], "metadata": {}, "reference": None,
           "idempotency_key": None, "log_partition": 2, "log_offset": 41, "created_at": None, "committed_at": None,
           "reason": None, "replay_of": None, "kind": "transfer", "target": None, "reversed": 0}
    assert KEY.parse("acme", views.transaction(row, KEY, "acme")["position"]) == Position(2, 41)
    balances = [{"asset": "USD/2", "balance": 5, "held": 0, "overdraft_limit": 0, "metadata": None, "frozen": False,
                 "version": 3, "log_partition": 2, "log_offset": offset} for offset in (41, 40)]
    shown = views.account("alice", balances, KEY, "acme")  # type: ignore[arg-type]
    assert KEY.parse("acme", shown["position"]) == Position(2, 41)  # the latest change
    assert shown["version"] == 3
    with pytest.raises(InvalidRequest):
        KEY.parse("other", shown["position"])
