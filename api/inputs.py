"""Reading HTTP inputs strictly: bodies with a size limit, query parameters with ranges, cursors."""

from __future__ import annotations

import asyncio
import re
import struct
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from ledger.codec import decode_json
from ledger.errors import InvalidRequest, LedgerError
from ledger.positions import OFFSET_MAX, Position, PositionKey

BODY_BYTES_MAX = 1024 * 1024
DECODE_INLINE_BYTES_MAX = 64 * 1024


class PayloadTooLarge(LedgerError):
    code = "payload_too_large"


async def json_body(request: Request, optional: bool = False) -> Any:
    """The JSON body, refused with 413 as soon as it passes `BODY_BYTES_MAX` (never read whole); with
    `optional`, an empty body is None."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > BODY_BYTES_MAX:
        raise PayloadTooLarge(f"the body must be at most {BODY_BYTES_MAX} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > BODY_BYTES_MAX:
            raise PayloadTooLarge(f"the body must be at most {BODY_BYTES_MAX} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if optional and not raw.strip():
        return None
    if len(raw) > DECODE_INLINE_BYTES_MAX:
        # A large body's parse and duplicate-key check take milliseconds: beside the event loop, not in it.
        return await asyncio.to_thread(decode_json, raw)
    return decode_json(raw)


async def json_object(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    """A JSON body that must be an object of these `fields` at most (an unknown one is refused, never ignored)."""
    body = await json_body(request)
    return object_of(body, fields)


def object_of(body: object, fields: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("must be an object", "body")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", "body")
    return body


def check_params(request: Request, allowed: frozenset[str], prefixes: tuple[str, ...] = (),
                 repeatable: frozenset[str] = frozenset()) -> None:
    """Refuse a query parameter the route does not take (a typo such as `wiat` would silently drop a
    guarantee) and one given twice (which value counts would be a guess), but those in `repeatable`."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in allowed and not name.startswith(prefixes):
            raise InvalidRequest(f"unknown parameter {name!r}", "query")
        if name in seen and name not in repeatable:
            raise InvalidRequest(f"parameter {name!r} is given more than once", "query")
        seen.add(name)


def header(request: Request, name: bytes) -> str | None:
    """A header that must be given at most once, decoded as UTF-8 (an HTTP header is bytes: Starlette's
    Latin-1 reading would store a non-ASCII key garbled)."""
    found = [value for key, value in request.scope["headers"] if key == name]
    if not found:
        return None
    if len(found) > 1:
        raise InvalidRequest(f"the {name.decode()} header is given more than once", name.decode())
    try:
        return found[0].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("must be UTF-8", name.decode()) from None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12 or not low <= int(raw) <= high:
        raise InvalidRequest(f"must be an integer from {low} to {high}", name)
    return int(raw)


def bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false")
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest("must be true or false", name)
    return raw in ("true", "1")


def time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    return None if raw is None else parse_time(raw, name)


# RFC 3339's date-time (section 5.6), its "T" and "Z" in either case; nothing of ISO 8601's other forms.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def parse_time(raw: str, name: str) -> datetime:
    """An RFC 3339 time, in UTC; `InvalidRequest` for anything else."""
    match = _RFC3339.fullmatch(raw)
    if match is None:
        raise InvalidRequest("must be an RFC 3339 time, such as 2026-01-31T12:00:00Z", name)
    date, time, fraction, offset = match.groups()
    # Python's datetime keeps microseconds: further digits are cut, never rounded into the next second.
    text = f"{date}T{time}{(fraction or '')[:7]}{'+00:00' if offset in ('Z', 'z') else offset}"
    if time.endswith(":60"):
        raise InvalidRequest("a leap second (:60) is a time this ledger cannot hold; give :59.999999", name)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest("is not a date and time that exists (years 0001 to 9999)", name) from None
    # PostgreSQL's timestamptz reaches further than Python's datetime (years 1 to 9999), so the bound is
    # Python's, in UTC: 0001-01-01T00:00:00+14:00 is a year-0 instant, which asyncpg cannot convert.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest("must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z", name) from None


def position_param(request: Request, positions: PositionKey, tenant: str) -> Position | None:
    """`min_position`: a token issued to `tenant`, or `InvalidRequest` (another tenant's token included)."""
    raw = request.query_params.get("min_position")
    return None if raw is None else positions.parse(tenant, raw)


# A cursor holds a log offset (the accounts' holds an address, sealed too so that every cursor is one kind of
# thing), which a tenant must not read: sealed for the tenant and the listing (`PositionKey.seal`), so another
# tenant's cursor, another listing's and any changed character are refused alike.
ENTRIES_CURSOR = "entries-cursor"
TRANSACTIONS_CURSOR = "transactions-cursor"
ACCOUNTS_CURSOR = "accounts-cursor"
NOT_A_CURSOR = "not a cursor this API issued to this tenant for this listing"
_ENTRY = struct.Struct(">QI")  # log offset, leg
LEG_MAX = 2**31 - 1  # entries.leg is a PostgreSQL integer
_OFFSET = struct.Struct(">Q")
_PREFIX = re.compile(r"[A-Za-z0-9_:.@-]{0,128}", re.ASCII)
# Past every address character (they are ASCII below '~'): [prefix, prefix + '~') holds every address that
# starts with the prefix, in the byte order of the balances' index.
PREFIX_END = "~"


def _opened(request: Request, positions: PositionKey, tenant: str, listing: str) -> bytes | None:
    """What the `cursor` parameter holds if `listing` issued it to `tenant`; None when absent."""
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    plain = positions.unseal(tenant, listing, raw)
    if plain is None:
        raise InvalidRequest(NOT_A_CURSOR, "cursor")
    return plain


def encode_cursor(positions: PositionKey, tenant: str, offset: int, leg: int) -> str:
    """The entries' cursor for `tenant` that `cursor_param` opens to (offset, leg)."""
    assert 0 <= offset <= OFFSET_MAX and 0 <= leg <= LEG_MAX, (offset, leg)
    return positions.seal(tenant, ENTRIES_CURSOR, _ENTRY.pack(offset, leg))


def cursor_param(request: Request, positions: PositionKey, tenant: str) -> tuple[int, int]:
    """Entries strictly before this (offset, leg); the first page starts past every entry."""
    plain = _opened(request, positions, tenant, ENTRIES_CURSOR)
    if plain is None:
        return (OFFSET_MAX, LEG_MAX)
    offset, leg = _ENTRY.unpack(plain)
    return offset, leg


def encode_transactions_cursor(positions: PositionKey, tenant: str, offset: int, id: str) -> str:
    """The transactions' cursor for `tenant` that `transactions_cursor_param` opens to (offset, id)."""
    assert 0 <= offset <= OFFSET_MAX and id.isascii(), (offset, id)
    return positions.seal(tenant, TRANSACTIONS_CURSOR, _OFFSET.pack(offset) + id.encode("ascii"))


def transactions_cursor_param(request: Request, positions: PositionKey, tenant: str) -> tuple[int, str]:
    """Transactions strictly before this (log_offset, id); the first page starts past every one."""
    plain = _opened(request, positions, tenant, TRANSACTIONS_CURSOR)
    if plain is None:
        return (OFFSET_MAX, "")
    return _OFFSET.unpack_from(plain)[0], plain[_OFFSET.size:].decode("ascii")


def encode_account_cursor(positions: PositionKey, tenant: str, account: str) -> str:
    """The accounts' cursor for `tenant` that `account_cursor_param` opens to `account`."""
    assert account.isascii(), account
    return positions.seal(tenant, ACCOUNTS_CURSOR, account.encode("ascii"))


def account_cursor_param(request: Request, positions: PositionKey, tenant: str) -> str | None:
    """Accounts strictly after this address; None for the first page."""
    plain = _opened(request, positions, tenant, ACCOUNTS_CURSOR)
    return None if plain is None else plain.decode("ascii")


def prefix_param(request: Request) -> tuple[str, str]:
    """The address range [low, high) of `?prefix=` (every account when absent)."""
    prefix = request.query_params.get("prefix", "")
    if _PREFIX.fullmatch(prefix) is None:
        raise InvalidRequest("must be up to 128 characters an address may hold", "prefix")
    return prefix, prefix + PREFIX_END
