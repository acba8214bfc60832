"""Positions: where a request sits in the log, and the opaque tokens that API clients get for them.

See docs/architecture.md ("Position tokens and cursors") for the construction (AES-SIV, RFC 5297, from the
`cryptography` package, keyed by HKDF-SHA256 from the position key) and why.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.errors import InvalidRequest

KEY_BYTES = 32
_SIV_KEY_BYTES = 64  # AES-256-SIV: two AES-256 keys, one for the tag (S2V), one for the counter mode
_TAG_BYTES = 16  # the synthetic IV that AES-SIV puts before the ciphertext
OFFSET_MAX = 2**63 - 1  # Kafka's offsets are signed 64-bit integers
PARTITION_MAX = 2**16 - 1  # far above LEDGER_TOPIC_PARTITIONS' 1024
_PLAIN = struct.Struct(">HQ")
TOKEN_CHARS = -(-(_TAG_BYTES + _PLAIN.size) * 4 // 3)  # 26 bytes: 35 characters, unpadded
_TOKEN = re.compile(f"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}", re.ASCII)
_RAW = re.compile(r"([0-9]{1,9})-([0-9]{1,19})", re.ASCII)
NOT_ISSUED = "not a position token this ledger issued to this tenant"
SEALED_PLAIN_BYTES_MAX = 255
_SEALED_CHARS_MAX = -(-(_TAG_BYTES + SEALED_PLAIN_BYTES_MAX) * 4 // 3)
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

    __slots__ = ("_answers", "_seals", "_tokens")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a position key is {KEY_BYTES} bytes, not {len(key)}")
        # One AES-SIV key per use, derived apart: no sealed value opens as a token or the other way round.
        self._tokens = AESSIV(_derive(key, b"ledger position tokens, AES-SIV"))
        self._seals = AESSIV(_derive(key, b"ledger sealed values, AES-SIV"))
        self._answers = AESSIV(_derive(key, b"ledger waited answers, AES-SIV"))

    def __repr__(self) -> str:
        return "PositionKey(...)"  # never the key

    def token(self, tenant: str, position: Position) -> str:
        """The token `tenant` is given for `position`; `parse` with the same tenant gives it back."""
        assert 0 <= position.partition <= PARTITION_MAX and 0 <= position.offset <= OFFSET_MAX, position
        plain = _PLAIN.pack(position.partition, position.offset)
        return _base64(self._tokens.encrypt(plain, [_tenant(tenant)]))

    def parse(self, tenant: str, token: str, field: str = "min_position") -> Position:
        """The position of a token issued to `tenant` under this key; `InvalidRequest` naming `field` for any
        other string (another tenant's, another key's, changed, cut, or not a token at all)."""
        # Length first: nothing of a long string is read.
        if len(token) != TOKEN_CHARS or _TOKEN.fullmatch(token) is None:
            raise InvalidRequest(NOT_ISSUED, field)
        sealed = _unbase64(token)
        if sealed is None:
            raise InvalidRequest(NOT_ISSUED, field)
        try:
            plain = self._tokens.decrypt(sealed, [_tenant(tenant)])
        except InvalidTag:
            raise InvalidRequest(NOT_ISSUED, field) from None
        partition, offset = _PLAIN.unpack(plain)
        return Position(partition, offset)

    def seal(self, tenant: str, purpose: str, plain: bytes) -> str:
        """`plain` sealed for `tenant` and `purpose` (what the value is for, such as a listing's name): URL-safe,
        deterministic, and opened by `unseal` only with the same tenant and purpose."""
        assert len(plain) <= SEALED_PLAIN_BYTES_MAX, len(plain)
        return _base64(self._seals.encrypt(plain, [_purpose(purpose), _tenant(tenant)]))

    def unseal(self, tenant: str, purpose: str, sealed: str) -> bytes | None:
        """What `seal` sealed for `tenant` and `purpose` under this key; None for any other string (another
        tenant's or purpose's, another key's, changed, cut, or not sealed at all): the caller names the field."""
        # Length first: nothing of a long string is read.
        if len(sealed) > _SEALED_CHARS_MAX or _SEALED.fullmatch(sealed) is None:
            return None
        raw = _unbase64(sealed)
        if raw is None or len(raw) < _TAG_BYTES:
            return None
        try:
            return self._seals.decrypt(raw, [_purpose(purpose), _tenant(tenant)])
        except InvalidTag:
            return None


    def seal_answer(self, position: Position, answer: bytes) -> str:
        """A waited request's answer as the projector sends it to the API over PostgreSQL's notifications: sealed
        to its position (any role that can connect may LISTEN or NOTIFY; none without this key can read or make
        one)."""
        return _base64(self._answers.encrypt(answer, [_PLAIN.pack(position.partition, position.offset)]))

    def open_answer(self, position: Position, sealed: str) -> bytes | None:
        """The answer `seal_answer` sealed to `position`; None for anything else."""
        raw = _unbase64(sealed) if _SEALED.fullmatch(sealed) else None
        if raw is None or len(raw) <= _TAG_BYTES:
            return None
        try:
            return self._answers.decrypt(raw, [_PLAIN.pack(position.partition, position.offset)])
        except InvalidTag:
            return None


def _derive(key: bytes, use: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_SIV_KEY_BYTES, salt=None, info=use).derive(key)


def _tenant(tenant: str) -> bytes:
    return tenant.encode("utf-8", "surrogatepass")


def _purpose(purpose: str) -> bytes:
    label = purpose.encode("utf-8")
    assert 0 < len(label) <= 255, purpose
    return label


def _unbase64(text: str) -> bytes | None:
    """The bytes `_base64` made `text` of; None for any other spelling (decoding ignores the spare bits of the
    last character, so it is checked by encoding again: one value, one spelling)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        return None
    return raw if _base64(raw) == text else None


def _base64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
