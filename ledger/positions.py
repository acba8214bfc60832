"""Positions: where a request sits in the log, and the opaque tokens that API clients get for them.

See docs/architecture.md ("Position tokens and cursors") for the construction, SIV from keyed BLAKE2b, and why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from typing import NamedTuple

from ledger.errors import InvalidRequest

KEY_BYTES = 32
TOKEN_CHARS = 32
OFFSET_MAX = 2**63 - 1  # Kafka's offsets are signed 64-bit integers
PARTITION_MAX = 2**16 - 1  # far above LEDGER_TOPIC_PARTITIONS' 1024
_PLAIN = struct.Struct(">HQ")
_SIV_BYTES = 14
_TOKEN = re.compile(f"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}", re.ASCII)
_RAW = re.compile(r"([0-9]{1,9})-([0-9]{1,19})", re.ASCII)
NOT_ISSUED = "not a position token this ledger issued to this tenant"
SEALED_PLAIN_BYTES_MAX = 255
_SEAL_TAG_BYTES = 16
_SEAL_PAD_BYTES = 64  # BLAKE2b's longest digest: a pad block
_SEALED_CHARS_MAX = -(-(_SEAL_TAG_BYTES + SEALED_PLAIN_BYTES_MAX) * 4 // 3)
_SEALED = re.compile("[A-Za-z0-9_-]+", re.ASCII)


class Position(NamedTuple):
    """A record's partition and offset in `ledger.transactions`; ordered by (partition, offset).

    A NamedTuple for the same reason as `Entry`: several are made per request the projector decides.
    """

    partition: int
    offset: int

    def raw(self) -> str:
        """`<partition>-<offset>` in the clear: only for those who may read the log itself (operators' logs and
        commands, the `record` of an outcome on `ledger.outcomes`). An API client gets `PositionKey.token`."""
        return f"{self.partition}-{self.offset}"


def parse_raw(text: str, field: str) -> Position:
    """A position written as `Position.raw` writes it, or `InvalidRequest` naming `field`."""
    match = _RAW.fullmatch(text)
    if match is None or int(match[2]) > OFFSET_MAX:
        raise InvalidRequest("not a position (<partition>-<offset>)", field)
    return Position(int(match[1]), int(match[2]))


class PositionKey:
    """Seals positions into a tenant's opaque tokens and opens them again (see the module's docstring).

    Every process that makes or reads tokens (the API's workers, the projector's outcomes, a producer client
    that hands tokens on) must hold the same 32-byte key: `LEDGER_POSITION_KEY`.
    """

    __slots__ = ("_pad", "_seal_pad", "_seal_siv", "_siv")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a position key is {KEY_BYTES} bytes, not {len(key)}")
        # Keyed once: copying a keyed state costs less than keying BLAKE2b again (a block of its own).
        self._siv = hashlib.blake2b(key=key, digest_size=_SIV_BYTES, person=b"ledger-pos-siv")
        self._pad = hashlib.blake2b(key=key, digest_size=_PLAIN.size, person=b"ledger-pos-pad")
        self._seal_siv = hashlib.blake2b(key=key, digest_size=_SEAL_TAG_BYTES, person=b"ledger-seal-siv")
        self._seal_pad = hashlib.blake2b(key=key, digest_size=_SEAL_PAD_BYTES, person=b"ledger-seal-pad")

    def __repr__(self) -> str:
        return "PositionKey(...)"  # never the key

    def token(self, tenant: str, position: Position) -> str:
        """The token `tenant` is given for `position`; `parse` with the same tenant gives it back."""
        assert 0 <= position.partition <= PARTITION_MAX and 0 <= position.offset <= OFFSET_MAX, position
        plain = _PLAIN.pack(position.partition, position.offset)
        siv = self._tag(plain, tenant)
        return base64.urlsafe_b64encode(siv + self._xor(plain, siv)).decode("ascii")

    def parse(self, tenant: str, token: str, field: str = "min_position") -> Position:
        """The position of a token issued to `tenant` under this key; `InvalidRequest` naming `field` for any
        other string (another tenant's, another key's, changed, cut, or not a token at all)."""
        # Length first: nothing of a long string is read.
        if len(token) != TOKEN_CHARS or _TOKEN.fullmatch(token) is None:
            raise InvalidRequest(NOT_ISSUED, field)
        sealed = base64.urlsafe_b64decode(token)
        siv = sealed[:_SIV_BYTES]
        plain = self._xor(sealed[_SIV_BYTES:], siv)
        if not hmac.compare_digest(self._tag(plain, tenant), siv):
            raise InvalidRequest(NOT_ISSUED, field)
        partition, offset = _PLAIN.unpack(plain)
        return Position(partition, offset)

    def seal(self, tenant: str, purpose: str, plain: bytes) -> str:
        """`plain` sealed for `tenant` and `purpose` (what the value is for, such as a listing's name): URL-safe,
        deterministic, and opened by `unseal` only with the same tenant and purpose."""
        assert len(plain) <= SEALED_PLAIN_BYTES_MAX, len(plain)
        siv = self._seal_tag(tenant, purpose, plain)
        return _base64(siv + self._seal_xor(plain, siv))

    def unseal(self, tenant: str, purpose: str, sealed: str) -> bytes | None:
        """What `seal` sealed for `tenant` and `purpose` under this key; None for any other string (another
        tenant's or purpose's, another key's, changed, cut, or not sealed at all): the caller names the field."""
        # Length first: nothing of a long string is read.
        if len(sealed) > _SEALED_CHARS_MAX or _SEALED.fullmatch(sealed) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except binascii.Error:
            return None
        # Decoding ignores the spare bits of the last character: one value, one spelling, as for tokens.
        if len(raw) < _SEAL_TAG_BYTES or _base64(raw) != sealed:
            return None
        siv = raw[:_SEAL_TAG_BYTES]
        plain = self._seal_xor(raw[_SEAL_TAG_BYTES:], siv)
        if not hmac.compare_digest(self._seal_tag(tenant, purpose, plain), siv):
            return None
        return plain

    def _tag(self, plain: bytes, tenant: str) -> bytes:
        mac = self._siv.copy()
        mac.update(plain)  # fixed length: `plain || tenant` splits one way only
        mac.update(tenant.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def _xor(self, data: bytes, siv: bytes) -> bytes:
        pad = self._pad.copy()
        pad.update(siv)
        return (int.from_bytes(data) ^ int.from_bytes(pad.digest())).to_bytes(_PLAIN.size)

    def _seal_tag(self, tenant: str, purpose: str, plain: bytes) -> bytes:
        label = purpose.encode("utf-8")
        assert 0 < len(label) <= 255, purpose
        mac = self._seal_siv.copy()
        mac.update(bytes([len(label)]) + label + bytes([len(plain)]) + plain)  # lengths: it splits one way only
        mac.update(tenant.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def _seal_xor(self, data: bytes, siv: bytes) -> bytes:
        pad = b"".join(self._seal_block(siv, counter) for counter in range(-(-len(data) // _SEAL_PAD_BYTES)))
        return (int.from_bytes(data) ^ int.from_bytes(pad[:len(data)])).to_bytes(len(data))

    def _seal_block(self, siv: bytes, counter: int) -> bytes:
        block = self._seal_pad.copy()
        block.update(siv + bytes([counter]))
        return block.digest()


def _base64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
