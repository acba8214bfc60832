"""Defensive readers of the API's JSON: a missing or malformed field gives its neutral value, never an error."""

from __future__ import annotations

from datetime import datetime

from wallet_ledger.inputs import AnyPosting, Json, Posting, PostingAtMost


def _obj(value: object) -> Json:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: object, default: int = 0) -> int:
    """An amount or count: a JSON integer, or a decimal string (sums past int64 are shown so)."""
    found = _opt_int(value)
    return default if found is None else found


def _opt_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _ints(value: object) -> dict[str, int]:
    return {str(k): _int(v) for k, v in _obj(value).items()}


def _strs(value: object) -> dict[str, str]:
    return {str(k): v for k, v in _obj(value).items() if isinstance(v, str)}


def _postings(value: object) -> tuple[AnyPosting, ...]:
    out: list[AnyPosting] = []
    for p in value if isinstance(value, list) else []:
        if not isinstance(p, dict):
            continue
        source, destination, asset = str(p.get("source", "")), str(p.get("destination", "")), str(p.get("asset", ""))
        if "amount" in p:
            out.append(Posting(source, destination, _int(p.get("amount")), asset))
        elif "amount_max" in p:
            out.append(PostingAtMost(source, destination, _int(p.get("amount_max")), asset))
    return tuple(out)
