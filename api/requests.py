"""Reading HTTP inputs strictly: bodies with a size limit, query parameters with ranges, cursors."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from ledger.codec import decode_json
from ledger.errors import InvalidRequest, LedgerError
from ledger.positions import Position, PositionKey

BODY_BYTES_MAX = 1024 * 1024
_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9]{1,9})", re.ASCII)


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
    return decode_json(raw)


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
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest("must be an RFC 3339 time, such as 2026-01-31T12:00:00Z", name) from None
    if value.tzinfo is None:
        raise InvalidRequest("must carry a time zone offset (RFC 3339)", name)
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


def encode_cursor(offset: int, leg: int) -> str:
    return base64.urlsafe_b64encode(f"{offset}.{leg}".encode()).decode().rstrip("=")


# Each listing's cursors start with their own letter, so one listing's cursor is refused by another.
_TX_CURSOR = re.compile(r"t\.([0-9]{1,19})\.([A-Za-z0-9_.:-]{1,64})", re.ASCII)
_PREFIX = re.compile(r"[A-Za-z0-9_:.@-]{0,128}", re.ASCII)
# Past every address character (they are ASCII below '~'): [prefix, prefix + '~') holds every address that
# starts with the prefix, in the byte order of the balances' index.
PREFIX_END = "~"


def _opaque(raw: str, field: str) -> str:
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidRequest("not a cursor this API issued", field) from None


def encode_transactions_cursor(offset: int, id: str) -> str:
    return base64.urlsafe_b64encode(f"t.{offset}.{id}".encode()).decode().rstrip("=")


def transactions_cursor_param(request: Request) -> tuple[int, str]:
    """Transactions strictly before this (log_offset, id); the first page starts past every one."""
    raw = request.query_params.get("cursor")
    if raw is None:
        return (2**63 - 1, "")
    match = _TX_CURSOR.fullmatch(_opaque(raw, "cursor"))
    if match is None or int(match[1]) >= 2**63:
        raise InvalidRequest("not a cursor this API issued", "cursor")
    return int(match[1]), match[2]


def encode_account_cursor(account: str) -> str:
    return base64.urlsafe_b64encode(f"a.{account}".encode()).decode().rstrip("=")


def account_cursor_param(request: Request) -> str | None:
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    kind, _, account = _opaque(raw, "cursor").partition(".")
    if kind != "a" or not account or _PREFIX.fullmatch(account) is None:
        raise InvalidRequest("not a cursor this API issued", "cursor")
    return account


def prefix_param(request: Request) -> tuple[str, str]:
    """The address range [low, high) of `?prefix=` (every account when absent)."""
    prefix = request.query_params.get("prefix", "")
    if _PREFIX.fullmatch(prefix) is None:
        raise InvalidRequest("must be up to 128 characters an address may hold", "prefix")
    return prefix, prefix + PREFIX_END


def cursor_param(request: Request) -> tuple[int, int]:
    """Entries strictly before this (offset, leg); the first page starts past every entry."""
    raw = request.query_params.get("cursor")
    if raw is None:
        return (2**63 - 1, 2**31 - 1)
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidRequest("not a cursor this API issued", "cursor") from None
    match = _CURSOR.fullmatch(text)
    if match is None or int(match[1]) >= 2**63:
        raise InvalidRequest("not a cursor this API issued", "cursor")
    return int(match[1]), int(match[2])
