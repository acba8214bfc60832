"""Webhook signatures in Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`.

The timestamp is inside the MAC so a receiver can refuse a replayed delivery once it is older than its tolerance;
several `v1=` parts let a sender sign with an old and a new secret while a tenant rotates.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

# Bounded: int() of an unbounded digit string is slow (and refused past 4300 digits).
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def _mac(secret: str, body: bytes, at: int) -> str:
    return hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, at: int) -> str:
    """The signature header value for `body` sent at unix time `at`."""
    return f"t={at},v1={_mac(secret, body, at)}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance_s` of `now`.

    Never raises: a receiver feeds it whatever arrived, so anything malformed (no or several `t=`, no `v1=`,
    a non-integer time) is simply False. Unknown parts are ignored, as Stripe's receivers do, so a scheme can be
    added later."""
    if not isinstance(header, str):
        return False
    at: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if at is not None or not _TIMESTAMP.fullmatch(value):
                return False
            at = int(value)
        elif key == "v1":
            signatures.append(value)
    if at is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        return False
    expected = _mac(secret, body, at)
    # compare_digest takes str only when ASCII; a non-ASCII candidate cannot match a hex digest anyway.
    return any(s.isascii() and hmac.compare_digest(expected, s) for s in signatures)


def new_secret() -> str:
    """A fresh signing secret (256 bits), prefixed so a leaked one is recognisable in logs and scanners."""
    return "whsec_" + secrets.token_urlsafe(32)
