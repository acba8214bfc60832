"""Verifying webhook deliveries: the `Ledger-Signature` header, Stripe's scheme.

A delivery is `POST <url>` with a JSON body `{"id", "type", "tenant", "position", "created_at", "data"}` and
the headers `Ledger-Event-Id` and `Ledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>` (several `v1=` parts while a secret rotates). A receiver should verify the signature over the
raw bytes it received, refuse a `t` too far from its clock, and deduplicate on the event id (delivery is at
least once):

    event = construct_event(secret, request_body_bytes, request.headers["Ledger-Signature"])
    if not already_seen(event["id"]):
        handle(event["type"], event["data"])
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any

from wallet_ledger.errors import SignatureError

SIGNATURE_HEADER = "Ledger-Signature"
EVENT_ID_HEADER = "Ledger-Event-Id"
DEFAULT_TOLERANCE_S = 300

_TIMESTAMP = re.compile(r"[0-9]{1,15}")  # bounded: int() of a huge digit string is slow
_HEX = re.compile(r"[0-9a-f]{64}")


def _mac(secret: str | bytes, body: bytes, timestamp: int) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The `Ledger-Signature` header value the ledger would send for `body` at `timestamp` (now by default):
    for testing a receiver."""
    at = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={at},v1={_mac(secret, body, at)}"


def _parse(header: str) -> tuple[int, list[str]] | None:
    at: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            if at is not None or not _TIMESTAMP.fullmatch(value):
                return None
            at = int(value)
        elif key == "v1":
            signatures.append(value.strip())
    if at is None or not signatures:
        return None
    return at, signatures


def verify_signature(secret: str | bytes, body: bytes, header: str | None, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """Whether `header` (the `Ledger-Signature` value) signs `body` (the raw bytes received) with `secret`, at
    a time within `tolerance_s` of `now` (the current time by default). Never raises: anything malformed is
    False. Unknown parts of the header are ignored; any one `v1=` matching is enough. The comparison is in
    constant time."""
    if not isinstance(header, str) or not isinstance(body, bytes | bytearray):
        return False
    parsed = _parse(header)
    if parsed is None:
        return False
    at, signatures = parsed
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        return False
    expected = _mac(secret, bytes(body), at).encode()
    matched = False
    for candidate in signatures:
        # Compared as bytes: compare_digest refuses non-ASCII str; a non-hex candidate never matches.
        ok = hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
        matched = matched or (ok and _HEX.fullmatch(candidate) is not None)
    return matched


def construct_event(secret: str | bytes, body: bytes, header: str | None, tolerance_s: float = DEFAULT_TOLERANCE_S,
                    now: float | None = None) -> dict[str, Any]:
    """The event of a delivery whose signature verifies, as a dict (`id`, `type`, `tenant`, `position`,
    `created_at`, `data`); `SignatureError` if it does not verify, or if the signed body is not a JSON object."""
    if not verify_signature(secret, body, header, tolerance_s, now):
        raise SignatureError("the Ledger-Signature header does not verify for this body, secret and time")
    try:
        event = json.loads(body)
    except ValueError as e:
        raise SignatureError(f"the signed body is not JSON: {e}") from e
    if not isinstance(event, dict):
        raise SignatureError("the signed body is not a JSON object")
    return event


__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "SignatureError", "construct_event", "sign", "verify_signature"]
