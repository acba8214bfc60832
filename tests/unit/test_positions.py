"""Position tokens and sealed values: opaque, bound to a tenant (and a purpose) and a key, and nothing else opens."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import positions as positions_module
from ledger.errors import InvalidRequest
from ledger.positions import (
    OFFSET_MAX,
    PARTITION_MAX,
    SEALED_PLAIN_BYTES_MAX,
    TOKEN_CHARS,
    Position,
    PositionKey,
    parse_raw,
)
from ledger.validation import TENANT_RE

KEY = PositionKey(bytes(range(32)))
OTHER_KEY = PositionKey(bytes(range(1, 33)))
TENANT = "acme"
AT = Position(3, 1_234_567)
TOKEN = KEY.token(TENANT, AT)
ALPHABET = string.ascii_letters + string.digits + "-_"
positions = st.builds(Position, st.integers(0, PARTITION_MAX), st.integers(0, OFFSET_MAX))
tenants = st.from_regex(TENANT_RE, fullmatch=True)


def refused(token: str, tenant: str = TENANT, key: PositionKey = KEY) -> bool:
    with pytest.raises(InvalidRequest) as caught:
        key.parse(tenant, token)
    assert (caught.value.code, caught.value.field) == ("invalid_request", "min_position")
    return True


@given(tenants, positions)
def test_a_token_opens_to_its_position_for_its_tenant(tenant: str, position: Position) -> None:
    token = KEY.token(tenant, position)
    assert KEY.parse(tenant, token) == position
    assert len(token) == TOKEN_CHARS and set(token) <= set(ALPHABET)


def test_a_token_shows_neither_partition_nor_offset() -> None:
    assert "1234567" not in TOKEN and not TOKEN.startswith("3-")
    # Consecutive offsets give unrelated tokens: no shared prefix or suffix gives the order away.
    following = KEY.token(TENANT, Position(3, 1_234_568))
    assert sum(a == b for a, b in zip(TOKEN, following, strict=True)) < 8


def test_one_position_gives_one_token_per_tenant_and_key() -> None:
    assert KEY.token(TENANT, AT) == TOKEN == PositionKey(bytes(range(32))).token(TENANT, AT)
    assert len({TOKEN, KEY.token("acme2", AT), OTHER_KEY.token(TENANT, AT), KEY.token(TENANT, Position(3, 0))}) == 4


@given(tenants, tenants, positions)
def test_another_tenants_token_is_refused(mine: str, theirs: str, position: Position) -> None:
    if mine != theirs:
        assert refused(KEY.token(theirs, position), mine)


def test_a_token_under_another_key_is_refused() -> None:
    assert refused(OTHER_KEY.token(TENANT, AT))


@pytest.mark.parametrize("at", range(TOKEN_CHARS))
def test_every_change_of_any_character_is_refused(at: int) -> None:
    for replacement in ALPHABET.replace(TOKEN[at], ""):
        assert refused(TOKEN[:at] + replacement + TOKEN[at + 1:])


def decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("byte", range(26))
def test_every_flipped_bit_is_refused(byte: int) -> None:
    sealed = bytearray(decoded(TOKEN))
    for bit in range(8):
        changed = bytearray(sealed)
        changed[byte] ^= 1 << bit
        assert refused(encoded(bytes(changed)))


def test_a_token_cut_lengthened_or_spelled_otherwise_is_refused() -> None:
    standard = base64.b64encode(decoded(TOKEN)).decode().rstrip("=")
    for token in (TOKEN[:-1], TOKEN[1:], TOKEN + "A", TOKEN + "=", "A" + TOKEN, f" {TOKEN}", TOKEN.upper(),
                  TOKEN + "\x00", TOKEN[:-1] + "\x00", TOKEN.replace(TOKEN[5], "+")):
        assert refused(token)
    if standard != TOKEN:  # the same bytes in the standard alphabet ('+', '/') are not how it was issued
        assert refused(standard)


@pytest.mark.parametrize("token", ["", "0-5", "3-1234567", "A" * TOKEN_CHARS, "\x00" * TOKEN_CHARS, "é" * TOKEN_CHARS,
                                   "\ud800" * TOKEN_CHARS, "%00", "null", "-" * TOKEN_CHARS, "=" * TOKEN_CHARS])
def test_garbage_is_refused(token: str) -> None:
    assert refused(token)


class Unread:
    """Stands in for the token pattern: fails the test if anything of the string is matched against it."""

    def fullmatch(self, value: str) -> None:
        raise AssertionError(f"{len(value)} characters read")


def test_a_huge_string_is_refused_by_its_length_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Deterministic where a timing was not (it failed on a loaded machine): the length decides, unread.
    monkeypatch.setattr(positions_module, "_TOKEN", Unread())
    assert refused("A" * 50_000_000)


@given(st.text(max_size=80))
def test_any_text_is_refused_with_invalid_request_only(token: str) -> None:
    assert refused(token)


@given(st.text(ALPHABET, min_size=TOKEN_CHARS, max_size=TOKEN_CHARS))
def test_a_token_shaped_guess_is_refused(token: str) -> None:
    assert refused(token)


def test_a_key_must_be_32_bytes_and_never_shows() -> None:
    for size in (0, 16, 31, 33, 64):
        with pytest.raises(ValueError):
            PositionKey(bytes(size))
    assert repr(KEY) == "PositionKey(...)" and "000102" not in repr(KEY)


@given(positions)
def test_a_raw_position_round_trips(position: Position) -> None:
    assert parse_raw(position.raw(), "until") == position


@pytest.mark.parametrize("text", ["", "1", "1-", "-1-5", "1-2-3", "a-1", "1-99999999999999999999", "1 -2", "\uff11-2",
                                  f"0-{OFFSET_MAX + 1}", TOKEN])
def test_anything_else_is_not_a_raw_position(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_raw(text, "until")
    assert caught.value.field == "until"


# --- sealed values (the API's cursors) --------------------------------------------------------------------

PURPOSE = "entries-cursor"
PLAIN = (1_234_567).to_bytes(8) + b"\x00\x00\x00\x03"
SEALED = KEY.seal(TENANT, PURPOSE, PLAIN)
plains = st.binary(max_size=SEALED_PLAIN_BYTES_MAX)


def unsealed(sealed: str, tenant: str = TENANT, purpose: str = PURPOSE, key: PositionKey = KEY) -> bytes | None:
    return key.unseal(tenant, purpose, sealed)


@given(tenants, st.text(min_size=1, max_size=20), plains)
def test_a_sealed_value_opens_for_its_tenant_and_purpose(tenant: str, purpose: str, plain: bytes) -> None:
    sealed = KEY.seal(tenant, purpose, plain)
    assert set(sealed) <= set(ALPHABET) and "=" not in sealed
    assert KEY.unseal(tenant, purpose, sealed) == plain
    assert KEY.seal(tenant, purpose, plain) == sealed  # deterministic


def test_a_sealed_value_shows_nothing_of_what_it_holds() -> None:
    raw = base64.urlsafe_b64decode(SEALED + "=" * (-len(SEALED) % 4))
    assert PLAIN not in raw and PLAIN[:8] not in raw and "1234567" not in SEALED
    following = KEY.seal(TENANT, PURPOSE, (1_234_568).to_bytes(8) + b"\x00\x00\x00\x03")
    assert sum(a == b for a, b in zip(SEALED, following, strict=True)) < 8


def test_a_value_sealed_for_another_tenant_purpose_or_key_is_refused() -> None:
    assert unsealed(KEY.seal("acme2", PURPOSE, PLAIN)) is None
    assert unsealed(KEY.seal(TENANT, "transactions-cursor", PLAIN)) is None
    assert unsealed(OTHER_KEY.seal(TENANT, PURPOSE, PLAIN)) is None
    assert unsealed(SEALED, tenant="acme2") is None and unsealed(SEALED, purpose="accounts-cursor") is None
    # The lengths are authenticated: a purpose cannot lend its end to the plain text, nor the plain to the tenant.
    assert unsealed(KEY.seal(TENANT, "entries-curso", b"r" + PLAIN)) is None
    assert unsealed(KEY.seal("me", PURPOSE, PLAIN + b"ac"), tenant="acme") is None


@given(tenants, tenants, plains)
def test_another_tenants_sealed_value_is_refused(mine: str, theirs: str, plain: bytes) -> None:
    if mine != theirs:
        assert unsealed(KEY.seal(theirs, PURPOSE, plain), tenant=mine) is None


def test_tokens_and_sealed_values_never_open_as_each_other() -> None:
    assert unsealed(TOKEN) is None and refused(SEALED)


@pytest.mark.parametrize("plain", [b"", PLAIN, bytes(64), bytes(65), bytes(SEALED_PLAIN_BYTES_MAX)])
def test_every_change_of_any_character_of_a_sealed_value_is_refused(plain: bytes) -> None:
    sealed = KEY.seal(TENANT, PURPOSE, plain)
    assert unsealed(sealed) == plain
    for at in range(len(sealed)):
        for replacement in ALPHABET.replace(sealed[at], ""):
            assert unsealed(sealed[:at] + replacement + sealed[at + 1:]) is None


def test_a_sealed_value_cut_lengthened_or_spelled_otherwise_is_refused() -> None:
    raw = base64.urlsafe_b64decode(SEALED + "=" * (-len(SEALED) % 4))
    padded = base64.urlsafe_b64encode(raw).decode()
    # The last character's spare bits: decoding ignores them, so only the issued spelling may pass.
    last = ALPHABET.index(SEALED[-1])
    spare = SEALED[:-1] + ALPHABET[last ^ 1]
    assert padded != SEALED and base64.urlsafe_b64decode(spare + "=" * (-len(spare) % 4)) == raw
    for sealed in (SEALED[:-1], SEALED[1:], SEALED + "A", SEALED + "AA", SEALED + "=", padded, spare, f" {SEALED}",
                   SEALED.upper(), SEALED + "\x00", base64.b64encode(raw).decode().rstrip("="), SEALED[:-2]):
        assert unsealed(sealed) is None


@pytest.mark.parametrize("sealed", ["", "A", "AA", "A" * 21, "A" * 22, "A" * 23, "A" * 38, "=" * 38, "é" * 38,
                                    "\ud800" * 38, "\x00" * 38, "%00", "null", TOKEN[:22]])
def test_garbage_is_not_a_sealed_value(sealed: str) -> None:
    assert unsealed(sealed) is None


def test_a_huge_string_is_not_unsealed_nor_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(positions_module, "_SEALED", Unread())
    assert unsealed("A" * 50_000_000) is None


@given(st.text(max_size=400))
def test_any_text_is_not_a_sealed_value(sealed: str) -> None:
    assert unsealed(sealed) is None


def test_at_most_255_bytes_are_sealed() -> None:
    assert unsealed(KEY.seal(TENANT, PURPOSE, bytes(255))) == bytes(255)
    with pytest.raises(AssertionError):
        KEY.seal(TENANT, PURPOSE, bytes(256))
