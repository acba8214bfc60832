"""The tamper-evident chain of a tenant's committed transactions (contract v3): each one's hash covers the
previous one's and the transaction exactly as the API shows it, so an auditor can recompute it from the API
alone. Pure: the fold extends it as it decides (one writer per partition, no lock), `ledger verify --chain`
recomputes it from the projection's rows.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

GENESIS = "0" * 64
# What the chain covers: the requests that move money (a hold reserves, a void releases, a policy sets).
CHAINED_KINDS = frozenset({"transfer", "capture", "reverse"})


def timestamp_text(value: datetime) -> str:
    """A time as the API shows it: RFC 3339, milliseconds, `Z`."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical(id: str, postings: list[dict[str, Any]], metadata: dict[str, str], reference: str | None,
              committed_at: str) -> bytes:
    """The contract's canonical form: those keys, sorted at every level, no whitespace."""
    return orjson.dumps({"id": id, "postings": postings, "metadata": metadata, "reference": reference,
                         "committed_at": committed_at}, option=orjson.OPT_SORT_KEYS)


def link(previous_hash: str, body: bytes) -> str:
    """`SHA-256(previous_hash + "\\n" + canonical)`, as 64 lowercase hex characters."""
    return hashlib.sha256(previous_hash.encode() + b"\n" + body).hexdigest()
