"""Migration 018 counts the versions of history projected before it (`ledger_count_versions`) exactly as the
fold counts them, so `if_version` is decided alike by a migrated projection and by a replay of the log."""

from __future__ import annotations

import asyncpg

from projections.pipeline import Pipeline
from tests.integration.conftest import created, raw, record
from tests.stack import unique

MINUTE_MS = 60_000


async def test_versions_counted_from_the_rows_equal_the_folds(
        scratch: tuple[asyncpg.Connection, str], line: Pipeline) -> None:
    conn, schema = scratch
    tenant = unique()
    usd = "USD/2"

    def hold(offset: int, source: str, destination: str, amount: int, **fields: object) -> object:
        return raw(offset, tenant, {"v": 1, "kind": "hold", "id": f"h{offset}", "tenant": tenant, "postings": [
            {"source": source, "destination": destination, "amount": amount, "asset": usd}], **fields})

    records = [
        created(0, tenant), record(1, tenant, 100),                                   # @world, alice
        record(2, tenant, 10, source="alice", destination="bob"),
        record(3, tenant, 1000, source="alice", destination="bob"),                   # rejected
        hold(4, "alice", "carol", 5), hold(5, "alice", "dan", 5), hold(6, "bob", "erin", 1, expires_in_s=1),
        raw(7, tenant, {"v": 1, "kind": "capture", "id": "c7", "tenant": tenant, "hold": "h4"}),
        raw(8, tenant, {"v": 1, "kind": "void", "id": "v8", "tenant": tenant, "hold": "h5"}),
        raw(9, tenant, {"v": 1, "kind": "reverse", "id": "r9", "tenant": tenant, "transaction": "tx2"}),  # bob
        # has 9 available (1 held by h6): rejected
        raw(10, tenant, {"v": 1, "kind": "policy", "id": "p10", "tenant": tenant, "account": "fay",
                         "frozen": False}),
        raw(11, tenant, {"v": 1, "id": "m11", "tenant": tenant, "postings": [
            {"source": "gus", "destination": "bob", "amount_max": 5, "asset": usd}]}),   # moves 0: no change
    ]
    # The last record comes a minute later, so h6 has expired by then.
    late = records.pop()
    late = late._replace(timestamp_ms=late.timestamp_ms + MINUTE_MS)
    await line.submit(records)
    await line.submit([late])
    await line.drain()
    folded = {r["account"]: r["version"] for r in await conn.fetch(
        f"SELECT account, version FROM {schema}.accounts WHERE tenant = $1", tenant)}
    # alice: funded, tx2, h4, h5, their capture and void; bob: tx2, h6 and its expiry; carol: h4 and its capture.
    assert folded == {"@world": 1, "alice": 6, "bob": 3, "carol": 2, "dan": 2, "erin": 2, "fay": 1}, folded

    # As before the migration: rows only for policies, no versions. Then the migration's count.
    await conn.execute(f"DELETE FROM {schema}.accounts WHERE tenant = $1 AND account <> 'fay'", tenant)
    await conn.execute(f"UPDATE {schema}.accounts SET version = 0 WHERE tenant = $1", tenant)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL search_path = {schema}, public")
        await conn.execute("SELECT public.ledger_count_versions()")
    counted = {r["account"]: r["version"] for r in await conn.fetch(
        f"SELECT account, version FROM {schema}.accounts WHERE tenant = $1", tenant)}
    assert counted == folded
