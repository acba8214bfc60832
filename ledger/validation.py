"""The contract's rules for ids, addresses, assets, amounts and request bodies.

Every check raises `InvalidRequest` naming the offending field; nothing here trusts its input's types.
"""

from __future__ import annotations

import re

import orjson

from ledger.errors import InvalidRequest
from ledger.requests import (
    HOLD_EXPIRES_IN_S_DEFAULT,
    Assertion,
    Posting,
    Watch,
)

AMOUNT_MAX = 2**63 - 1
BALANCE_MIN = -(2**63)
BALANCE_MAX = 2**63 - 1
POSTINGS_MAX = 128
METADATA_BYTES_MAX = 4096
REFERENCE_LEN_MAX = 255
IDEMPOTENCY_KEY_LEN_MAX = 255
TENANT_NAME_LEN_MAX = 200
HOLD_EXPIRES_IN_S_MAX = 2_592_000
LIMITS_MAX = 64  # assets with an overdraft limit, per account
BATCH_ITEMS_MAX = 1000
CONDITIONS_MAX = 128  # `if_version` accounts and `assert` bounds, together, per request
VERSION_MAX = 2**63 - 1

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
# An address or id made only of dots ("." and ".." above all) is refused: HTTP clients normalise such path
# segments away, so it could be written and never read.
ADDRESS_RE = re.compile(r"@[A-Za-z0-9_:.-]{1,127}|(?!\.+$)[A-Za-z0-9_:.-]{1,128}", re.ASCII)
ASSET_RE = re.compile(r"[A-Z][A-Z0-9]{0,15}(/([0-9]|1[0-8]))?", re.ASCII)
# Ids travel in URL paths, so they keep to characters that need no escaping.
ID_RE = re.compile(r"(?!\.+$)[A-Za-z0-9_.:-]{1,64}", re.ASCII)
# What PostgreSQL's text and jsonb refuse (NUL), and what UTF-8 cannot encode (lone surrogates, which a
# Python caller can build even though no JSON parser here lets them through).
UNSTORABLE_RE = re.compile(r"[\x00\ud800-\udfff]")

POSTING_FIELDS = frozenset({"source", "destination", "amount", "asset"})
MAX_POSTING_FIELDS = frozenset({"source", "destination", "amount_max", "asset"})
BODY_FIELDS = frozenset({"postings", "metadata", "reference"})
CONDITION_FIELDS = frozenset({"if_version", "assert"})
ASSERT_FIELDS = frozenset({"account", "asset", "min", "max"})


def _matching(value: object, pattern: re.Pattern[str], field: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"must be a string ({what})", field)
    if pattern.fullmatch(value) is None:
        raise InvalidRequest(f"is not a valid {what}", field)
    return value


def check_tenant(value: object, field: str = "tenant") -> str:
    return _matching(value, TENANT_RE, field, "tenant id")


def check_address(value: object, field: str = "address") -> str:
    return _matching(value, ADDRESS_RE, field, "account address")


def check_asset(value: object, field: str = "asset") -> str:
    return _matching(value, ASSET_RE, field, "asset")


def check_id(value: object, field: str = "id") -> str:
    return _matching(value, ID_RE, field, "id")


def is_system(address: str) -> bool:
    """System accounts (`@world`, ...) may hold negative balances."""
    return address.startswith("@")


def check_amount(value: object, field: str = "amount") -> int:
    # bool is an int subclass; a float is never money.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest("must be an integer in minor units", field)
    if not 1 <= value <= AMOUNT_MAX:
        raise InvalidRequest(f"must be between 1 and {AMOUNT_MAX}", field)
    return value


def check_object(value: object, field: str, allowed: frozenset[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise InvalidRequest("must be an object", field)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}", field)
    return value


def parse_posting(value: object, field: str, maximum: bool = False) -> Posting:
    """A posting; with `maximum`, one that gives `amount_max` (at most that much) instead of `amount`."""
    fields = MAX_POSTING_FIELDS if maximum else POSTING_FIELDS
    obj = check_object(value, field, fields)
    missing = sorted(fields - set(obj))
    if missing:
        raise InvalidRequest(f"missing field {missing[0]!r}", field)
    amount_field = "amount_max" if maximum else "amount"
    posting = Posting(
        source=check_address(obj["source"], f"{field}.source"),
        destination=check_address(obj["destination"], f"{field}.destination"),
        amount=check_amount(obj[amount_field], f"{field}.{amount_field}"),
        asset=check_asset(obj["asset"], f"{field}.asset"),
    )
    if posting.source == posting.destination:
        raise InvalidRequest("source and destination must differ", field)
    if maximum and is_system(posting.source):
        # "What is available" of a system account is unbounded: amount_max would mean nothing there.
        raise InvalidRequest("amount_max needs a customer account as source, not a system account", field)
    return posting


def parse_postings(value: object, maxima: bool = False) -> tuple[Posting, ...]:
    return parse_postings_with_max(value, maxima)[0]


def parse_postings_with_max(value: object, maxima: bool = True) -> tuple[tuple[Posting, ...], frozenset[int]]:
    """Postings, and (when `maxima` allows them) the indexes of those that give `amount_max`."""
    if not isinstance(value, list):
        raise InvalidRequest("must be a list", "postings")
    if not 1 <= len(value) <= POSTINGS_MAX:
        raise InvalidRequest(f"must hold 1 to {POSTINGS_MAX} postings", "postings")
    maxed = frozenset(i for i, p in enumerate(value) if maxima and isinstance(p, dict) and "amount_max" in p)
    postings = tuple(parse_posting(p, f"postings[{i}]", i in maxed) for i, p in enumerate(value))
    return postings, maxed


def _bound(value: object, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not BALANCE_MIN <= value <= BALANCE_MAX:
        raise InvalidRequest(f"must be an integer from {BALANCE_MIN} to {BALANCE_MAX}", field)
    return value


def parse_if_version(value: object) -> tuple[tuple[str, int], ...]:
    """`{"<address>": version}`: the exact version each account must have when the request is decided."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not 1 <= len(value) <= CONDITIONS_MAX:
        raise InvalidRequest(f"must be an object of 1 to {CONDITIONS_MAX} accounts", "if_version")
    pairs = []
    for address, version in value.items():
        check_address(address, "if_version")
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= VERSION_MAX:
            raise InvalidRequest(f"version of {address} must be an integer from 0 to {VERSION_MAX}", "if_version")
        pairs.append((address, version))
    return tuple(sorted(pairs))


def parse_asserts(value: object) -> tuple[Assertion, ...]:
    """`[{"account", "asset", "min"?, "max"?}]`: bounds on posted balances after the request."""
    if value is None:
        return ()
    if not isinstance(value, list) or not 1 <= len(value) <= CONDITIONS_MAX:
        raise InvalidRequest(f"must be a list of 1 to {CONDITIONS_MAX} assertions", "assert")
    asserts = []
    for index, item in enumerate(value):
        field = f"assert[{index}]"
        obj = check_object(item, field, ASSERT_FIELDS)
        if "account" not in obj or "asset" not in obj:
            raise InvalidRequest("must name an account and an asset", field)
        low, high = _bound(obj.get("min"), f"{field}.min"), _bound(obj.get("max"), f"{field}.max")
        if low is not None and high is not None and low > high:
            raise InvalidRequest("min must not exceed max", field)
        asserts.append(Assertion(check_address(obj["account"], f"{field}.account"),
                                 check_asset(obj["asset"], f"{field}.asset"), low, high))
    return tuple(asserts)


def parse_conditions(obj: dict[str, object]) -> tuple[tuple[tuple[str, int], ...], tuple[Assertion, ...]]:
    """A body's `if_version` and `assert`, bounded together by `CONDITIONS_MAX`."""
    if_version, asserts = parse_if_version(obj.get("if_version")), parse_asserts(obj.get("assert"))
    if len(if_version) + len(asserts) > CONDITIONS_MAX:
        raise InvalidRequest(f"at most {CONDITIONS_MAX} conditions (if_version and assert together)", "assert")
    return if_version, asserts


def storable(value: str) -> bool:
    """Whether PostgreSQL can store `value` as text or inside jsonb."""
    return UNSTORABLE_RE.search(value) is None


def parse_metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("must be an object of string values", "metadata")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidRequest(f"value of {key!r} must be a string", "metadata")
        if not storable(key) or not storable(item):
            raise InvalidRequest("keys and values must not contain NUL or unpaired surrogates", "metadata")
    if len(orjson.dumps(value)) > METADATA_BYTES_MAX:
        raise InvalidRequest(f"must be at most {METADATA_BYTES_MAX} bytes as JSON", "metadata")
    return value


def _short_string(value: object, field: str, length_max: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("must be a string or null", field)
    if not 1 <= len(value) <= length_max or not storable(value):
        raise InvalidRequest(f"must be 1 to {length_max} characters, without NUL", field)
    return value


def check_tenant_name(value: object) -> str:
    name = _short_string(value, "name", TENANT_NAME_LEN_MAX)
    if name is None:
        raise InvalidRequest(f"must be a string of 1 to {TENANT_NAME_LEN_MAX} characters", "name")
    return name


def parse_expires_in_s(value: object) -> int:
    if value is None:
        return HOLD_EXPIRES_IN_S_DEFAULT
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= HOLD_EXPIRES_IN_S_MAX:
        raise InvalidRequest(f"must be an integer from 1 to {HOLD_EXPIRES_IN_S_MAX}", "expires_in_s")
    return value


def parse_partial_amount(value: object) -> int | None:
    return None if value is None else check_amount(value, "amount")


def parse_reference(value: object) -> str | None:
    return _short_string(value, "reference", REFERENCE_LEN_MAX)


def parse_idempotency_key(value: object) -> str | None:
    return _short_string(value, "idempotency_key", IDEMPOTENCY_KEY_LEN_MAX)


def parse_watch(obj: dict[str, object]) -> Watch:
    """A balance monitor's account, asset and bounds: at least one of `below` and `above`."""
    if "account" not in obj or "asset" not in obj:
        raise InvalidRequest(f"missing field {'account' if 'account' not in obj else 'asset'!r}", "body")
    below, above = _bound(obj.get("below"), "below"), _bound(obj.get("above"), "above")
    if below is None and above is None:
        raise InvalidRequest("give below, above or both", "body")
    return Watch(check_address(obj["account"], "account"), check_asset(obj["asset"]), below, above)


def parse_limits(value: object) -> tuple[tuple[str, int], ...]:
    """Per-asset overdraft limits: how far below zero a customer account's available balance may go."""
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > LIMITS_MAX:
        raise InvalidRequest(f"must be an object of at most {LIMITS_MAX} assets", "overdraft_limit")
    limits = []
    for asset, limit in value.items():
        check_asset(asset, "overdraft_limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= AMOUNT_MAX:
            raise InvalidRequest(f"limit of {asset} must be an integer from 0 to {AMOUNT_MAX}", "overdraft_limit")
        limits.append((asset, limit))
    return tuple(sorted(limits))


def parse_frozen(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest("must be true or false", "frozen")
    return value


def check_customer(value: object, field: str) -> str:
    """A customer account's address: system accounts have no policy (they may always go negative)."""
    address = check_address(value, field)
    if is_system(address):
        raise InvalidRequest("a system account has no policy", field)
    return address
