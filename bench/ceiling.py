"""PostgreSQL's own ceiling for the projector's rows, and the WAL each committed transfer costs.

The ceiling takes the very rows the projector just wrote for a run of transfers (its transactions, entries
and final balances), held in memory beforehand, and writes them again the way the projector does, minus
everything the projector does in Python: COPY of the transactions and entries rows and the balances upsert,
in transactions of `BATCH` transfers, into tables built `LIKE` the live ones (same indexes and constraints) with
the same storage parameters. What the projector reaches against it is the share of the database's ceiling it uses.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from bench import tools
from ledger.rows import BALANCE_COLUMNS, ENTRY_COLUMNS, TRANSACTION_COLUMNS
from projections.statements import UPSERT_BALANCES

BATCH = 5000
TABLES = ("transactions", "entries", "balances")


async def applied(conn: asyncpg.Connection) -> dict[int, int]:
    """The next offset to apply per partition: where a run's rows start."""
    rows = await conn.fetch("SELECT log_partition, next_offset FROM projection_offsets")
    return {r["log_partition"]: r["next_offset"] for r in rows}


async def wal_bytes(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT wal_bytes FROM pg_stat_wal"))


async def wal_lsn(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_current_wal_flush_lsn()"))


async def wal_by_record(conn: asyncpg.Connection, start: int, count: int, top: int = 8) -> list[dict[str, Any]]:
    """What the WAL written since `start` is made of, per record type, per transaction: where to cut."""
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    rows = await conn.fetch(
        "SELECT \"resource_manager/record_type\" AS kind, count, record_size, fpi_size, combined_size"
        " FROM pg_get_wal_stats($1::pg_lsn, pg_current_wal_flush_lsn(), true)"
        " ORDER BY combined_size DESC LIMIT $2", start, top)
    return [{"kind": r["kind"], "per_tx": round(r["count"] / count, 2),
             "bytes_per_tx": round(r["combined_size"] / count), "fpi_bytes_per_tx": round(r["fpi_size"] / count)}
            for r in rows]


async def _rows_since(conn: asyncpg.Connection, since: dict[int, int]) -> tuple[list[Any], list[Any], list[Any]]:
    """The transactions written since `since`, in log order, their entries, and their accounts' balances."""
    transactions = await conn.fetch(
        f"SELECT {', '.join('t.' + c for c in TRANSACTION_COLUMNS)} FROM transactions t"
        " JOIN unnest($1::int[], $2::bigint[]) AS s(p, o) ON t.log_partition = s.p AND t.log_offset >= s.o"
        " ORDER BY t.log_partition, t.log_offset", list(since), list(since.values()))
    tenant_at, id_at = TRANSACTION_COLUMNS.index("tenant"), TRANSACTION_COLUMNS.index("id")
    entries = await conn.fetch(
        f"SELECT {', '.join('e.' + c for c in ENTRY_COLUMNS)} FROM entries e"
        " JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON e.tenant = k.tenant AND e.transaction_id = k.id",
        [t[tenant_at] for t in transactions], [t[id_at] for t in transactions])
    keys = {(e["tenant"], e["account"], e["asset"]) for e in entries}
    balances = await conn.fetch(
        f"SELECT {', '.join('b.' + c for c in BALANCE_COLUMNS)} FROM balances b"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, account, asset)"
        " ON b.tenant = k.tenant AND b.account = k.account AND b.asset = k.asset",
        *[list(c) for c in zip(*keys, strict=True)])
    return [tuple(r) for r in transactions], [tuple(r) for r in entries], [tuple(r) for r in balances]


async def measure(conn: asyncpg.Connection, since: dict[int, int]) -> dict[str, Any]:
    """Write the rows the projector wrote since `since` again, at the database's pace; tx/s and WAL/tx."""
    transactions, entries, balances = await _rows_since(conn, since)
    by_tx: dict[tuple[str, str], list[Any]] = {}
    id_at = ENTRY_COLUMNS.index("transaction_id")
    for entry in entries:
        by_tx.setdefault((entry[0], entry[id_at]), []).append(entry)
    balance_of = {(b[0], b[1], b[2]): b for b in balances}
    batches = []
    for first in range(0, len(transactions), BATCH):
        chunk = transactions[first:first + BATCH]
        chunk_entries = [e for t in chunk for e in by_tx.get((t[0], t[1]), ())]
        keys = {(e[0], e[1], e[2]) for e in chunk_entries}
        chunk_balances = [balance_of[k] for k in keys if k in balance_of]
        columns = [list(c) for c in zip(*chunk_balances, strict=True)] if chunk_balances else []
        batches.append((chunk, chunk_entries, columns))
    suffix = f"ceiling_{time.time_ns() % 10**9}"
    for table in TABLES:
        await conn.execute(f"CREATE TABLE {table}_{suffix} (LIKE {table} INCLUDING ALL)")
        # LIKE copies indexes and constraints, not the table's storage parameters (fillfactor).
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass", table)
        if options:
            await conn.execute(f"ALTER TABLE {table}_{suffix} SET ({', '.join(options)})")
    upsert = UPSERT_BALANCES.replace("INTO balances", f"INTO balances_{suffix}")
    try:
        wal_before = await wal_bytes(conn)
        meter = tools.CpuMeter().start()
        started = time.perf_counter()
        for chunk, chunk_entries, columns in batches:
            async with conn.transaction():
                await conn.copy_records_to_table(f"transactions_{suffix}", records=chunk, columns=TRANSACTION_COLUMNS)
                await conn.copy_records_to_table(f"entries_{suffix}", records=chunk_entries, columns=ENTRY_COLUMNS)
                if columns:
                    await conn.execute(upsert, *columns)
        seconds = time.perf_counter() - started
        cpu = meter.stop()
        wal = await wal_bytes(conn) - wal_before
    finally:
        for table in TABLES:
            await conn.execute(f"DROP TABLE IF EXISTS {table}_{suffix}")
    count = len(transactions)
    return {"transactions": count, "entries": len(entries), "seconds": round(seconds, 2),
            "tx_per_s": round(count / seconds) if seconds else 0,
            "wal_bytes_per_tx": round(wal / count) if count else 0, "cpu": cpu}
