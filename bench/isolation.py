"""How long poison isolation takes: one batch of 5,000 transfers applied the plain way into a scratch
projection, clean and with one record PostgreSQL refuses, in the same run.

`python -m bench.isolation` (against LEDGER_DATABASE_URL), or as part of `make bench`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import orjson

from bench.stack import Bench
from infra import settings as settings_mod
from ledger.batch import Record
from ledger.placement import partition_for
from projections.pipeline import Pipeline

BATCH = 5000
PARTITIONS = 4
POISON_AT = 3_333  # anywhere; bisection takes log2(BATCH) rounds wherever it is
ROUNDS = 3


def _records(tenant: str, poison: bool) -> list[Record]:
    partition = partition_for(tenant.encode(), PARTITIONS)
    creation = {"v": 1, "kind": "tenant", "id": "create", "tenant": tenant, "name": tenant}
    values = [orjson.dumps(creation)]
    for i in range(1, BATCH):
        body = {"v": 1, "id": f"tx{i}", "tenant": tenant, "postings": [
            {"source": "@world", "destination": f"a{i % 500}", "amount": 5, "asset": "USD/2"}]}
        if poison and i == POISON_AT:
            body["reference"] = "poison"
        values.append(orjson.dumps(body))
    return [Record(partition, offset, tenant.encode(), value, 1_700_000_000_000) for offset, value in enumerate(values)]


async def _apply(url: str, poison: bool) -> float:
    conn = await asyncpg.connect(url)
    schema = f"proj_bench_{uuid.uuid4().hex[:10]}"
    await conn.execute("SELECT ledger_create_projection($1)", schema)
    # Stands for any value that passes validation but not PostgreSQL.
    await conn.execute(f"ALTER TABLE {schema}.transactions ADD CHECK (reference IS DISTINCT FROM 'poison')")
    line = Pipeline(lambda: asyncpg.connect(url), None, PARTITIONS, schema)
    try:
        records = _records(f"bench-{uuid.uuid4().hex[:8]}", poison)
        started = time.perf_counter()
        results = await line._plain(records)
        seconds = time.perf_counter() - started
        assert sum(r.applied for r in results) == BATCH
        invalid = await conn.fetchval(f"SELECT count(*) FROM {schema}.transactions WHERE reason = 'invalid'")
        assert invalid == (1 if poison else 0)
        return seconds
    finally:
        await line.close()
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def measure(url: str) -> dict[str, Any]:
    clean = sorted([await _apply(url, False) for _ in range(ROUNDS)])
    poisoned = sorted([await _apply(url, True) for _ in range(ROUNDS)])
    return {"batch": BATCH, "clean_s": round(clean[ROUNDS // 2], 3), "poisoned_s": round(poisoned[ROUNDS // 2], 3),
            "ratio": round(poisoned[ROUNDS // 2] / clean[ROUNDS // 2], 2)}


async def isolation(bench: Bench) -> None:
    bench.results["isolation"] = await measure(bench.db_url)


def main() -> None:
    result = asyncio.run(measure(settings_mod.load().database_url))
    print(f"batch of {result['batch']}: clean {result['clean_s']} s, with one poison record "
          f"{result['poisoned_s']} s ({result['ratio']}x), medians of {ROUNDS}")


if __name__ == "__main__":
    main()

