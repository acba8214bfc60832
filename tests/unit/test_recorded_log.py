"""A log recorded before the request types were split by kind (issue 22), replayed by today's code: each
record decodes, re-encodes to its own bytes, keeps the fingerprint its idempotency key was bound to, and the
fold writes exactly the rows and outcomes it wrote then. Nothing here may be regenerated: the fixture is the
old code's answer."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ledger.batch import BatchRows, Invalid, Record, decode_all
from ledger.codec import decode_request, encode_request
from ledger.fold import fold_batch
from ledger.memory import Ledger
from ledger.positions import Position, PositionKey
from ledger.requests import BatchRequest, Tick, TransactionRequest

FIXTURE = Path(__file__).parent / "data" / "recorded_log.json"
PARTITIONS = 4
KEY = PositionKey(bytes(range(32)))


def records_of(log: list[list[Any]]) -> list[Record]:
    return [Record(p, o, None if k is None else k.encode(), v.encode(), ts) for p, o, k, v, ts in log]


def fingerprints(records: list[Record]) -> dict[str, list[str]]:
    """Per record (`<partition>-<offset>`) the fingerprints its keys bind: the request's, or a batch's own
    then each item's."""
    out: dict[str, list[str]] = {}
    for record, item in zip(records, decode_all(records, PARTITIONS), strict=True):
        if isinstance(item, BatchRequest):
            out[f"{record.partition}-{record.offset}"] = [item.fingerprint().hex()] + [
                i.fingerprint().hex() for i in item.items]
        elif isinstance(item, TransactionRequest):
            out[f"{record.partition}-{record.offset}"] = [item.fingerprint().hex()]
    return out


def plain(value: object) -> object:
    """`value` as JSON whatever its Python types: rows by position, dict items sorted."""
    if isinstance(value, dict):
        return sorted(([plain(k), plain(v)] for k, v in value.items()), key=lambda kv: orjson.dumps(kv[0]))
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Position):
        return [value.partition, value.offset]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    assert value is None or isinstance(value, (str, int, bool)), type(value)
    return value


def folded(records: list[Record]) -> dict[str, object]:
    ledger = Ledger(tenants={"acme": True, "initech": True})
    rows = fold_batch(ledger, records, decode_all(records, PARTITIONS), BatchRows(positions=KEY))
    # `answers` are the live projector's, built after the fold for the API (`ledger.shown`), never written.
    return {f.name: plain(getattr(rows, f.name)) for f in dataclasses.fields(rows)
            if f.name not in ("positions", "answers")}


def fold_digest(records: list[Record]) -> str:
    return hashlib.sha256(orjson.dumps(folded(records), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _fixture() -> dict[str, Any]:
    return orjson.loads(FIXTURE.read_bytes())  # type: ignore[no-any-return]


def test_every_record_of_the_recorded_log_encodes_back_to_its_own_bytes() -> None:
    records = records_of(_fixture()["records"])
    decoded = decode_all(records, PARTITIONS)
    readable = [(r, d) for r, d in zip(records, decoded, strict=True) if not isinstance(d, Invalid)]
    assert len(readable) >= 30  # most of it: the few unreadable ones are there to be recorded as invalid
    for record, request in readable:
        if isinstance(request, Tick):
            continue
        assert decode_request(record.key, encode_request(request)) == request, record
        # Byte for byte where the record was written by this project's own encoder (key order included).
        if record.key != b"initech":
            assert encode_request(request) == record.value, record


def test_every_idempotency_fingerprint_is_the_one_recorded() -> None:
    fixture = _fixture()
    assert fingerprints(records_of(fixture["records"])) == fixture["fingerprints"]


def test_the_recorded_log_folds_into_exactly_the_rows_and_outcomes_it_did() -> None:
    fixture = _fixture()
    records = records_of(fixture["records"])
    assert fold_digest(records) == fixture["folded"]
    rows = folded(records)
    assert len(rows["outcomes"]) >= 40 and rows["entries"]  # type: ignore[arg-type]
