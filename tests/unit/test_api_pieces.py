"""The API's pure pieces: `min_position`, cursors, and authentication from memory."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from api import views
from api.auth import ApiKey, Forbidden, KeyStore, Unauthorized, new_secret_key
from api.requests import cursor_param, encode_cursor, position_param
from ledger.errors import InvalidRequest
from ledger.positions import Position, PositionKey


def query(qs: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": qs.encode(), "headers": []})


KEY = PositionKey(bytes(32))


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


@given(st.integers(0, 2**63 - 1), st.integers(0, 10**9 - 1))  # legs are below 256
def test_a_cursor_round_trips(offset: int, leg: int) -> None:
    assert cursor_param(query(f"cursor={encode_cursor(offset, leg)}")) == (offset, leg)


@pytest.mark.parametrize("cursor", ["%00", "!!", "bm90IGEgY3Vyc29y", encode_cursor(2**63, 0), "A" * 5000])
def test_a_cursor_not_issued_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidRequest):
        cursor_param(query(f"cursor={cursor}"))


def test_no_cursor_starts_past_every_entry() -> None:
    assert cursor_param(query("")) == (2**63 - 1, 2**31 - 1)


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
                 "log_partition": 2, "log_offset": offset} for offset in (41, 40)]
    shown = views.account("alice", balances, KEY, "acme")  # type: ignore[arg-type]
    assert KEY.parse("acme", shown["position"]) == Position(2, 41)  # the latest change
    with pytest.raises(InvalidRequest):
        KEY.parse("other", shown["position"])
