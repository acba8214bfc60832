"""How a transaction is shown (the contract's JSON shape), from its row as the API reads it, or from the rows a
projector batch has just folded: a waited transfer's answer, sent with the batch's progress notification, so the
API answers without reading back what the projector wrote (issue 24: that read was most of PostgreSQL's work per
waited write).

Both paths build the same bytes. A row read from PostgreSQL holds `postings` and `metadata` as jsonb, which keeps
an object's keys shorter first, then bytewise; `jsonb_ordered` puts a folded row's in that order too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ledger.batch import BatchRows, Record
from ledger.chain import CHAINED_KINDS, timestamp_text
from ledger.positions import Position, PositionKey
from ledger.requests import TRANSFER
from ledger.rows import TransactionRow
from ledger.validation import AMOUNT_MAX

# How a transaction names what it acted on; and which kinds can be reversed (they show `reversed`).
TARGET_NAMES = {"capture": "captures", "void": "voids", "reverse": "reverses", "unmonitor": "monitor"}
REVERSIBLE = frozenset({"transfer", "capture", "reverse"})
# A notification is at most 7,999 bytes, and a sealed answer takes a third more than its JSON (base64) and a
# tag: an answer longer than this is read instead.
ANSWER_BYTES_MAX = 5_800
# A batch's answers, in all: past this its requests read theirs. Notifications go to every listener and stay in
# PostgreSQL's queue until the slowest has read them; this bounds what a batch adds to it.
BATCH_ANSWERS_BYTES_MAX = 256 * 1024


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else timestamp_text(value)  # as the chain hashes it


def transaction(row: Any, positions: PositionKey, tenant: str) -> dict[str, Any]:
    """A transaction from its row (an `asyncpg.Record` of `api_transaction`'s columns, or a mapping of them)."""
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


def with_effects(body: dict[str, Any], after: dict[str, dict[str, int]], hash: bytes | None,
                 previous_hash: bytes | None) -> dict[str, Any]:
    """`body` with its accounts' balances right after it (when it moved money) and its chain link (when
    chained)."""
    if after:
        body["balances_after"] = after
    if hash is not None and previous_hash is not None:
        body["hash"], body["previous_hash"] = hash.hex(), previous_hash.hex()
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


def _jsonb_key(key: str) -> tuple[int, bytes]:
    encoded = key.encode()
    return len(encoded), encoded


def jsonb_ordered(value: Any) -> Any:
    """`value` with every object's keys in the order PostgreSQL's jsonb keeps them: shorter first, then
    bytewise. (jsonb also rewrites numbers; a transaction's postings and metadata hold none but integers.)"""
    if isinstance(value, dict):
        return {k: jsonb_ordered(value[k]) for k in sorted(value, key=_jsonb_key)}
    if isinstance(value, list):
        return [jsonb_ordered(v) for v in value]
    return value


def answers(rows: BatchRows, records: list[Record], asked: list[tuple[str, str]],
            positions: PositionKey) -> list[tuple[int, int, str]]:
    """The answers to the waited transfers among `records` (each marked by its producer, the API), as their
    rows in this batch show them, with the transfer's (tenant, id) in `asked`: (partition, offset, the JSON
    sealed to its position). A record whose row is not its own (a repeat, answered with its original), whose
    answer is too long for a notification, or past the batch's share gets none, and the API reads it instead."""
    wanted: dict[tuple[str, str], tuple[Record, TransactionRow]] = {}
    for record, key in zip(records, asked, strict=True):
        index = rows.transaction_at.get(key)
        if index is None:
            continue
        row = rows.transactions[index]
        if row.log_partition == record.partition and row.log_offset == record.offset and row.kind == TRANSFER:
            wanted[key] = (record, row)
    if not wanted:
        return []
    after: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
    for e in rows.entries:  # in leg order: the last leg of an account and asset is its balance after
        found = wanted.get((e.tenant, e.transaction_id))
        if found is not None and e.log_offset == found[0].offset:
            after.setdefault((e.tenant, e.transaction_id), {}).setdefault(e.account, {})[e.asset] = e.balance_after
    out = []
    total = 0
    for key, (record, row) in wanted.items():
        postings = jsonb_ordered(orjson.loads(row.postings))
        # The row as `api_transaction` returns it: its JSON columns decoded as jsonb keeps them, not a repeat.
        shown_row = {**row._asdict(), "postings": postings, "metadata": jsonb_ordered(orjson.loads(row.metadata)),
                     "replay_of": None}
        body = transaction(shown_row, positions, key[0])
        moved = after.get(key, {}) if row.status == "committed" and postings else {}
        chained = row.kind in CHAINED_KINDS and row.hash is not None
        shown = orjson.dumps(with_effects(body, jsonb_ordered(moved), row.hash if chained else None,
                                          row.previous_hash if chained else None))
        if len(shown) <= ANSWER_BYTES_MAX and total + len(shown) <= BATCH_ANSWERS_BYTES_MAX:
            total += len(shown)
            out.append((record.partition, record.offset, positions.seal_answer(record.position, shown)))
    return out
