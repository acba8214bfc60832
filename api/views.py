"""How stored rows are shown: the contract's JSON shapes, positions as the tenant's opaque tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ledger.chain import timestamp_text
from ledger.positions import Position, PositionKey
from ledger.validation import AMOUNT_MAX


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else timestamp_text(value)  # as the chain hashes it


# How a transaction names what it acted on; and which kinds can be reversed (they show `reversed`).
TARGET_NAMES = {"capture": "captures", "void": "voids", "reverse": "reverses", "unmonitor": "monitor"}
REVERSIBLE = frozenset({"transfer", "capture", "reverse"})


def transaction(row: asyncpg.Record, positions: PositionKey, tenant: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row["id"],
        "status": row["status"],
        "postings": row["postings"],
        "metadata": row["metadata"],
        "reference": row["reference"],
        "idempotency_key": row["idempotency_key"],
        "position": positions.token(tenant, Position(row["log_partition"], row["log_offset"])),
        "created_at": timestamp(row["created_at"]),
        "committed_at": timestamp(row["committed_at"]),
    }
    if row["reason"] is not None:
        body["reason"] = row["reason"]
    if row["replay_of"] is not None:
        body["replay_of"] = row["replay_of"]
    kind = row["kind"]
    if kind != "transfer":
        body["kind"] = kind
    if kind in TARGET_NAMES:
        body[TARGET_NAMES[kind]] = row["target"]
    if kind in REVERSIBLE and row["status"] == "committed":
        body["reversed"] = reversed_amount(row["postings"], row["reversed"])
    return body


def amount(total: int) -> int | str:
    """A sum the API shows: an int64 as a JSON number, past it a decimal string (int64 clients cannot read
    a larger number)."""
    return total if -AMOUNT_MAX - 1 <= total <= AMOUNT_MAX else str(total)


def reversed_amount(postings: list[dict[str, Any]], reversed: int) -> int | str | dict[str, int | str]:
    """The amount reversed so far: in the transaction's asset, or per asset when it moved several. Several
    postings are reversed only whole (`reversed` is then 1 once they are), so an asset's amount is all its
    postings moved, or nothing. A sum past int64 (postings may add up past it) is a decimal string."""
    if len(postings) == 1:
        return reversed
    sums: dict[str, int] = {}
    for p in postings:
        sums[p["asset"]] = sums.get(p["asset"], 0) + (p["amount"] if reversed else 0)
    shown = {asset: total if total <= AMOUNT_MAX else str(total) for asset, total in sorted(sums.items())}
    return next(iter(shown.values())) if len(shown) == 1 else shown


def account(address: str, rows: list[asyncpg.Record], positions: PositionKey, tenant: str) -> dict[str, Any]:
    """An account from its balance rows, each carrying the account's policy (a row without an asset: a policy
    and no balance yet)."""
    policy = rows[0] if rows else None
    rows = [r for r in rows if r["asset"] is not None]
    latest = max((Position(r["log_partition"], r["log_offset"]) for r in rows), default=None)
    return {"address": address, "balances": {r["asset"]: r["balance"] for r in rows},
            "held": {r["asset"]: r["held"] for r in rows},
            "available": {r["asset"]: r["balance"] - r["held"] for r in rows},
            "position": positions.token(tenant, latest) if latest else None,
            "metadata": policy["metadata"] if policy is not None and policy["metadata"] is not None else {},
            "overdraft_limit": {r["asset"]: r["overdraft_limit"] for r in rows if r["overdraft_limit"]},
            "frozen": bool(policy is not None and policy["frozen"]),
            # How many committed records changed the account (contract v3; `if_version` compares with it).
            "version": policy["version"] if policy is not None and policy["version"] is not None else 0}


def hold(row: asyncpg.Record, positions: PositionKey, tenant: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row["id"],
        "status": row["status"],
        "postings": row["postings"],
        "metadata": row["metadata"],
        "reference": row["reference"],
        "expires_at": timestamp(row["expires_at"]),
        "position": positions.token(tenant, Position(row["log_partition"], row["log_offset"])),
        "created_at": timestamp(row["created_at"]),
        "closed_at": timestamp(row["closed_at"]),
    }
    if row["reason"] is not None:
        body["reason"] = row["reason"]
    if row["closed_by"] is not None:
        body["closed_by"] = row["closed_by"]
    return body


def monitor(row: asyncpg.Record, positions: PositionKey, tenant: str) -> dict[str, Any]:
    """A balance monitor (contract v3): `status` active, or removed (with `removed_at`)."""
    body: dict[str, Any] = {
        "id": row["id"],
        "account": row["account"],
        "asset": row["asset"],
        "below": row["below"],
        "above": row["above"],
        "status": "active" if row["active"] else "removed",
        "position": positions.token(tenant, Position(row["log_partition"], row["log_offset"])),
        "created_at": timestamp(row["created_at"]),
    }
    if row["removed_at"] is not None:
        body["removed_at"] = timestamp(row["removed_at"])
    return body


def entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "transaction_id": row["transaction_id"],
        "asset": row["asset"],
        "amount": row["amount"],
        "balance_after": row["balance_after"],
        "committed_at": timestamp(row["committed_at"]),
    }
