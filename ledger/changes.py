"""What a projector batch changed, as its progress notifications tell the API: how far each partition is
applied, and which accounts' balance rows moved (for the API's balance cache).

An account is named by 8 bytes of BLAKE2b over its tenant and address: 748 fit in one notification (PostgreSQL
refuses a payload of 8,000 bytes or more), and a collision costs one needless invalidation, never a stale read.
A batch's notifications go out in order (changes first, offsets last) and are delivered together at its commit,
so by the time the API sees a partition advance, it has dropped everything the batch changed, and holds the
answers to the batch's waited transfers (`ledger.shown.answers`).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable

import orjson

PAYLOAD_MAX = 7999
KEY_BYTES = 8
# {"changed":"…"}: 14 bytes around the base64 of at most 748 keys (5,984 bytes, 7,980 characters).
KEYS_PER_PAYLOAD = 748
OFFSETS_PER_PAYLOAD = 250  # "1023":9223372036854775807, is 28 bytes at most
_KEYS = struct.Struct("<Q")
ANSWERS_OPEN, ANSWERS_CLOSE = b'{"answers":[', b"]}"
_ANSWERS_WRAP = len(ANSWERS_OPEN) + len(ANSWERS_CLOSE)


def account_key(tenant: str, account: str) -> int:
    """The 64-bit name of a tenant's account; neither may contain "\\x1f" (ids and addresses cannot)."""
    digest = hashlib.blake2b(f"{tenant}\x1f{account}".encode(), digest_size=KEY_BYTES).digest()
    return int(_KEYS.unpack(digest)[0])


def payloads(offsets: dict[int, int], changed: Iterable[int],
             answers: Iterable[tuple[int, int, str]] = ()) -> list[str]:
    """A batch's notifications, in the order they must be sent: its changed accounts, the answers to its
    waited transfers (partition, offset, sealed answer: base64url; as many to a notification as fit), then its
    offsets."""
    keys = list(changed)
    out = []
    for first in range(0, len(keys), KEYS_PER_PAYLOAD):
        packed = b"".join(_KEYS.pack(k) for k in keys[first:first + KEYS_PER_PAYLOAD])
        out.append(orjson.dumps({"changed": base64.b64encode(packed).decode()}).decode())
    items: list[bytes] = []
    size = _ANSWERS_WRAP
    for partition, offset, answer in answers:
        item = b'[%d,%d,"%b"]' % (partition, offset, answer.encode())
        if len(item) + size >= PAYLOAD_MAX:
            if len(item) + _ANSWERS_WRAP >= PAYLOAD_MAX:  # past what one notification takes: the API reads it
                continue
            out.append((ANSWERS_OPEN + b",".join(items) + ANSWERS_CLOSE).decode())
            items, size = [], _ANSWERS_WRAP
        items.append(item)
        size += len(item) + 1
    if items:
        out.append((ANSWERS_OPEN + b",".join(items) + ANSWERS_CLOSE).decode())
    parts = sorted(offsets)
    for first in range(0, max(len(parts), 1), OFFSETS_PER_PAYLOAD):  # always one, last
        chunk = {str(p): offsets[p] for p in parts[first:first + OFFSETS_PER_PAYLOAD]}
        out.append(orjson.dumps({"offsets": chunk}).decode())
    return out


def reset_payload() -> str:
    """Everything may have changed (an operator switched the projection): drop every cached balance."""
    return '{"reset":true}'


class Notification:
    """One notification, read: offsets to advance, accounts changed, or a reset."""

    __slots__ = ("answers", "changed", "offsets", "reset")

    def __init__(self, offsets: dict[int, int], changed: list[int], reset: bool,
                 answers: list[tuple[int, int, str]] | None = None) -> None:
        self.offsets = offsets
        self.changed = changed
        self.reset = reset
        self.answers = answers or []


def parse(payload: str) -> Notification:
    """A notification from this projector, or from one that predates the cache (a bare map of partitions to
    offsets, which names no accounts: read as a reset, so nothing it changed can stay cached)."""
    body = orjson.loads(payload)
    try:
        if not isinstance(body, dict):
            raise TypeError("not an object")
        if "answers" in body:
            answers = [(int(p), int(o), answer) for p, o, answer in body["answers"]]
            if not all(isinstance(a, str) for _, _, a in answers):
                raise TypeError("an answer is sealed, a string")
            return Notification({}, [], False, answers)
        if "offsets" in body or "changed" in body or "reset" in body:
            raw = base64.b64decode(body.get("changed", ""), validate=True)
            if len(raw) % KEY_BYTES:
                raise ValueError("changed accounts are 8 bytes each")
            return Notification({int(p): int(o) for p, o in body.get("offsets", {}).items()},
                            [k for (k,) in _KEYS.iter_unpack(raw)], body.get("reset") is True)
        return Notification({int(p): int(o) for p, o in body.items()}, [], True)
    except (TypeError, AttributeError) as e:
        raise ValueError(f"not a progress notification: {e}") from None
