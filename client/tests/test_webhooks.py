"""Webhook signatures: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, verified in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from wallet_ledger import SignatureError, construct_event, sign, verify_signature

SECRET = "whsec_test-secret"
BODY = json.dumps({"id": "evt_1", "type": "transaction.committed", "tenant": "acme", "position": "p",
                   "created_at": "2026-12-04T10:30:31.496Z", "data": {"id": "tx1"}}).encode()
NOW = 1_796_380_231


def header(at: int = NOW, secret: str = SECRET, body: bytes = BODY) -> str:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def test_good_signature() -> None:
    assert verify_signature(SECRET, BODY, header(), now=NOW)
    assert verify_signature(SECRET.encode(), BODY, header(), now=NOW + 299)
    assert sign(SECRET, BODY, NOW) == header()


def test_tampered_body_or_wrong_secret() -> None:
    assert not verify_signature(SECRET, BODY + b" ", header(), now=NOW)
    assert not verify_signature(SECRET, BODY.replace(b"tx1", b"tx2"), header(), now=NOW)
    assert not verify_signature("whsec_other", BODY, header(), now=NOW)
    tampered = header()[:-1] + ("0" if header()[-1] != "0" else "1")
    assert not verify_signature(SECRET, BODY, tampered, now=NOW)


def test_stale_or_future_timestamps() -> None:
    assert not verify_signature(SECRET, BODY, header(NOW - 301), now=NOW)
    assert not verify_signature(SECRET, BODY, header(NOW + 301), now=NOW)
    assert verify_signature(SECRET, BODY, header(NOW - 3000), tolerance_s=3600, now=NOW)
    assert not verify_signature(SECRET, BODY, header(NOW - 301))  # against the real clock: long past


@pytest.mark.parametrize("bad", [
    "", "garbage", "t=,v1=abc", f"v1={'0' * 64}", f"t={NOW}", f"t=abc,v1={'0' * 64}",
    f"t={NOW},t={NOW},v1={'0' * 64}", f"t=-{NOW},v1={'0' * 64}", f"t={'9' * 40},v1={'0' * 64}",
    f"t={NOW},v1=é{'0' * 63}", f"t={NOW},v1=",
])
def test_malformed_headers(bad: str) -> None:
    assert not verify_signature(SECRET, BODY, bad, now=NOW)


def test_not_a_string_or_bytes() -> None:
    assert not verify_signature(SECRET, BODY, None, now=NOW)
    assert not verify_signature(SECRET, BODY.decode(), header(), now=NOW)  # type: ignore[arg-type]


def test_rotation_any_v1_matches_and_unknown_parts_are_ignored() -> None:
    good = header().split(",v1=")[1]
    assert verify_signature(SECRET, BODY, f"t={NOW},v1={'0' * 64},v1={good},v0=whatever", now=NOW)
    assert verify_signature(SECRET, BODY, f" t={NOW} , v1={good} ", now=NOW)


def test_construct_event() -> None:
    event = construct_event(SECRET, BODY, header(int(__import__("time").time())))
    assert event["id"] == "evt_1" and event["data"] == {"id": "tx1"}
    assert construct_event(SECRET, BODY, header(), now=NOW)["type"] == "transaction.committed"
    with pytest.raises(SignatureError):
        construct_event(SECRET, BODY, header(), now=NOW + 1000)
    with pytest.raises(SignatureError):
        construct_event("wrong", BODY, header(), now=NOW)
    with pytest.raises(SignatureError):
        construct_event(SECRET, BODY, "t=1", now=NOW)
    not_json = b"not json"
    with pytest.raises(SignatureError, match="not JSON"):
        construct_event(SECRET, not_json, header(body=not_json), now=NOW)
    a_list = b"[1, 2]"
    with pytest.raises(SignatureError, match="not a JSON object"):
        construct_event(SECRET, a_list, header(body=a_list), now=NOW)
    assert issubclass(SignatureError, ValueError)
