"""How stored rows are shown: the contract's JSON shapes, positions as the tenant's opaque tokens."""

from __future__ import annotations

from typing import Any

import asyncpg

from ledger.positions import Position, PositionKey
from ledger.shown import REVERSIBLE, TARGET_NAMES, amount, reversed_amount, timestamp, transaction

__all__ = ["REVERSIBLE", "TARGET_NAMES", "account", "amount", "entry", "hold", "monitor", "reversed_amount",
           "timestamp", "transaction"]


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
