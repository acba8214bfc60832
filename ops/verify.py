"""`ledger verify`: recompute the projections from the log and compare them with the live ones.

The log is replayed into a scratch schema up to the live projection's offsets at the start; every row
below those offsets must match, balances must equal the live entries' running balances as of then, and
the live balances must agree with their own latest entries and sum to zero per tenant and asset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import orjson

from ledger.batch import Record
from ledger.chain import CHAINED_KINDS, GENESIS, canonical, link, timestamp_text
from projections.replay import replay
from projections.writer import committed_offsets, schema_path

DIFF_ROWS_MAX = 20

BELOW = """
WITH s(p, o) AS (SELECT * FROM unnest($1::int[], $2::bigint[])),
lt AS (SELECT t.* FROM {live}.transactions t JOIN s ON t.log_partition = s.p AND t.log_offset < s.o
       WHERE $3::text[] IS NULL OR t.tenant = ANY($3)),
le AS (SELECT e.* FROM {live}.entries e JOIN lt ON lt.tenant = e.tenant AND lt.id = e.transaction_id
       AND lt.log_offset = e.log_offset)
"""

CHECKS = {
    "transactions": (
        "SELECT tenant, id, status, reason, postings, metadata, reference, idempotency_key, fingerprint,"
        " log_partition, log_offset, created_at, committed_at, error, kind, target, chain_index, hash, previous_hash"
        " FROM {src}",
        "lt", "{shadow}.transactions"),
    "entries": ("SELECT tenant, account, asset, log_offset, leg, transaction_id, amount, balance_after, committed_at,"
                " credits_total, entry_number FROM {src}", "le", "{shadow}.entries"),
    "balances": ("SELECT tenant, account, asset, balance FROM {src}",
                 "(SELECT DISTINCT ON (tenant, account, asset) tenant, account, asset, balance_after AS balance"
                 " FROM le ORDER BY tenant, account, asset, log_offset DESC, leg DESC) AS asof",
                 # A row only a hold ever touched has no entries to compare against: its balance is 0.
                 "(SELECT b.* FROM {shadow}.balances b WHERE EXISTS (SELECT FROM {shadow}.entries e"
                 " WHERE e.tenant = b.tenant AND e.account = b.account AND e.asset = b.asset)) AS sb"),
    "idempotency_keys": ("SELECT tenant, key, transaction_id FROM {src}",
                         "(SELECT k.* FROM {live}.idempotency_keys k JOIN lt ON lt.tenant = k.tenant"
                         " AND lt.id = k.transaction_id) AS lk", "{shadow}.idempotency_keys"),
    "batches": ("SELECT tenant, id, idempotency_key, fingerprint, status, reason, atomic, items, log_partition,"
                " log_offset, created_at FROM {src}",
                "(SELECT b.* FROM {live}.batches b JOIN s ON b.log_partition = s.p AND b.log_offset < s.o"
                " WHERE $3::text[] IS NULL OR b.tenant = ANY($3)) AS lbt", "{shadow}.batches"),
    "replays": ("SELECT tenant, id, original_id, log_partition, log_offset FROM {src}",
                "(SELECT r.* FROM {live}.replays r JOIN s ON r.log_partition = s.p AND r.log_offset < s.o"
                " WHERE $3::text[] IS NULL OR r.tenant = ANY($3)) AS lr", "{shadow}.replays"),
    "tenants": ("SELECT id, name, log_partition, log_offset, created_at FROM {src}",
                "(SELECT t.* FROM {live}.tenants t JOIN s ON t.log_partition = s.p AND t.log_offset < s.o"
                " WHERE $3::text[] IS NULL OR t.id = ANY($3)) AS ltn", "{shadow}.tenants"),
    # A hold's request never changes; its state changes once. Closed in the replay (by the snapshot), it must
    # be closed alike in the live projection; open there, the live one may have closed it since.
    "holds": ("SELECT tenant, id, postings, expires_at, log_partition, log_offset, created_at FROM {src}",
              "(SELECT h.* FROM {live}.holds h JOIN s ON h.log_partition = s.p AND h.log_offset < s.o"
              " WHERE $3::text[] IS NULL OR h.tenant = ANY($3)) AS lh", "{shadow}.holds"),
    "holds closed by the snapshot": (
        "SELECT tenant, id, state, closed_by, closed_at FROM {src}",
        "(SELECT h.* FROM {live}.holds h JOIN {shadow}.holds x ON x.tenant = h.tenant AND x.id = h.id"
        " AND x.state <> 'held' WHERE $3::text[] IS NULL OR h.tenant = ANY($3)) AS lhc",
        "(SELECT * FROM {shadow}.holds WHERE state <> 'held') AS shc"),
    # An account's policy as of the snapshot: compared where the live one has not been replaced since.
    # Positions are not compared: migration 018 could not know which record expired a hold (only where the
    # last change was), and an account's position serves here only to tell which rows the snapshot covers.
    "accounts": ("SELECT tenant, account, metadata, overdraft_limit, frozen, version FROM {src}",
                 "(SELECT a.* FROM {live}.accounts a JOIN s ON a.log_partition = s.p AND a.log_offset < s.o"
                 " WHERE $3::text[] IS NULL OR a.tenant = ANY($3)) AS la",
                 "(SELECT x.* FROM {shadow}.accounts x WHERE NOT EXISTS (SELECT FROM {live}.accounts a"
                 " JOIN s ON a.log_partition = s.p AND a.log_offset >= s.o"
                 " WHERE a.tenant = x.tenant AND a.account = x.account)) AS sa"),
    # A monitor as created; removed in the replay (by the snapshot), it must be removed alike live.
    "monitors": ("SELECT tenant, id, account, asset, below, above, log_partition, log_offset, created_at FROM {src}",
                 "(SELECT m.* FROM {live}.monitors m JOIN s ON m.log_partition = s.p AND m.log_offset < s.o"
                 " WHERE $3::text[] IS NULL OR m.tenant = ANY($3)) AS lm", "{shadow}.monitors"),
    "monitors removed by the snapshot": (
        "SELECT tenant, id, active, removed_at FROM {src}",
        "(SELECT m.* FROM {live}.monitors m JOIN {shadow}.monitors x ON x.tenant = m.tenant AND x.id = m.id"
        " AND NOT x.active WHERE $3::text[] IS NULL OR m.tenant = ANY($3)) AS lmr",
        "(SELECT * FROM {shadow}.monitors WHERE NOT active) AS smr"),
    "invalid_events": ("SELECT log_partition, log_offset, record_key, record_value, error FROM {src}",
                       "(SELECT i.* FROM {live}.invalid_events i JOIN s ON i.log_partition = s.p"
                       " AND i.log_offset < s.o WHERE $3::text[] IS NULL OR encode(i.record_key, 'escape') = ANY($3))"
                       " AS li", "{shadow}.invalid_events"),
}

SELF_CHECKS = {
    "balances that differ from their latest entry": """
        SELECT b.tenant, b.account, b.asset, b.balance, x.balance_after FROM {live}.balances b
        LEFT JOIN LATERAL (SELECT e.balance_after FROM {live}.entries e
                           WHERE e.tenant = b.tenant AND e.account = b.account AND e.asset = b.asset
                           ORDER BY e.log_offset DESC, e.leg DESC LIMIT 1) x ON true
        WHERE coalesce(x.balance_after, 0) IS DISTINCT FROM b.balance AND ($1::text[] IS NULL OR b.tenant = ANY($1))""",
    "balances whose held is not the sum of their open holds": """
        SELECT b.tenant, b.account, b.asset, b.held, coalesce(o.held, 0) FROM {live}.balances b
        LEFT JOIN (SELECT h.tenant, p->>'source' AS account, p->>'asset' AS asset,
                          sum((p->>'amount')::numeric) AS held
                   FROM {live}.holds h, jsonb_array_elements(h.postings) AS p WHERE h.state = 'held'
                   GROUP BY 1, 2, 3) o ON o.tenant = b.tenant AND o.account = b.account AND o.asset = b.asset
        WHERE b.held IS DISTINCT FROM coalesce(o.held, 0) AND ($1::text[] IS NULL OR b.tenant = ANY($1))""",
    # `reversed` counts, for one posting, the amount its reversals moved; for several (reversed only whole),
    # its reversals (1 once reversed): a sum of several postings' amounts could pass int64.
    "transactions whose reversed disagrees with their reversals": """
        SELECT t.tenant, t.id, t.reversed, coalesce(r.amount, 0), coalesce(r.times, 0) FROM {live}.transactions t
        LEFT JOIN (SELECT x.tenant, x.target, sum((p->>'amount')::numeric) AS amount, count(DISTINCT x.id) AS times
                   FROM {live}.transactions x, jsonb_array_elements(x.postings) AS p
                   WHERE x.kind = 'reverse' AND x.status = 'committed' GROUP BY 1, 2) r
          ON r.tenant = t.tenant AND r.target = t.id
        WHERE t.reversed IS DISTINCT FROM CASE WHEN jsonb_array_length(t.postings) = 1 THEN coalesce(r.amount, 0)
                                               ELSE coalesce(r.times, 0) END
          AND ($1::text[] IS NULL OR t.tenant = ANY($1))""",
    "tenants and assets whose balances do not sum to zero": """
        SELECT tenant, asset, sum(balance) FROM {live}.balances WHERE $1::text[] IS NULL OR tenant = ANY($1)
        GROUP BY tenant, asset HAVING sum(balance) <> 0""",
}


CHAIN_ROWS = """
SELECT id, postings::text, metadata::text, reference, committed_at, chain_index, hash, previous_hash
FROM {live}.transactions WHERE tenant = $1 AND chain_index IS NOT NULL ORDER BY chain_index
"""
UNLINKED = """
SELECT id FROM {live}.transactions
WHERE tenant = $1 AND status = 'committed' AND kind = ANY($2) AND chain_index IS NULL ORDER BY log_offset LIMIT 1
"""


async def chain_disagreements(url: str, tenants: list[str] | None = None) -> list[str]:
    """Every tenant's chain recomputed from the live projection's rows, as an auditor would from the API: for
    each tenant, the first transaction whose stored link (place, previous hash, hash) disagrees, a committed one
    without a link, or a head that is not the last link's."""
    conn = await asyncpg.connect(url)
    try:
        live = str(await conn.fetchval("SELECT active_schema FROM ledger_meta"))
        schema_path(live)
        names = tenants if tenants is not None else [r["tenant"] for r in await conn.fetch(
            f"SELECT DISTINCT tenant FROM {live}.transactions WHERE status = 'committed' AND kind = ANY($1)"
            " ORDER BY tenant", sorted(CHAINED_KINDS))]
        found = []
        for tenant in names:
            problem = await _chain_problem(conn, live, tenant)
            if problem is not None:
                found.append(f"tenant {tenant!r}: {problem}")
        return found
    finally:
        await conn.close()


async def _chain_problem(conn: asyncpg.Connection, live: str, tenant: str) -> str | None:
    previous, count = GENESIS, 0
    for row in await conn.fetch(CHAIN_ROWS.format(live=live), tenant):
        count += 1
        body = canonical(row["id"], orjson.loads(row["postings"]), orjson.loads(row["metadata"]), row["reference"],
                         timestamp_text(row["committed_at"]))
        expected = link(previous, body)
        if row["chain_index"] != count:
            return f"transaction {row['id']!r} is link {row['chain_index']}, where link {count} was due"
        if bytes(row["previous_hash"]).hex() != previous:
            return f"transaction {row['id']!r}: its previous_hash is not the hash of the link before it"
        if bytes(row["hash"]).hex() != expected:
            return f"transaction {row['id']!r}: its hash is not that of its rows (changed behind the ledger's back)"
        previous = expected
    unlinked = await conn.fetchval(UNLINKED.format(live=live), tenant, sorted(CHAINED_KINDS))
    if unlinked is not None:
        return f"transaction {unlinked!r} is committed and has no link (a projection from before the chain: replay it)"
    head = await conn.fetchrow(f"SELECT count, head FROM {live}.chains WHERE tenant = $1", tenant)
    stored = (0, GENESIS) if head is None else (head["count"], bytes(head["head"]).hex())
    if stored != (count, previous):
        return "its head (count, hash) is not its last link's"
    return None


@dataclass(slots=True)
class Verdict:
    """Differences found, by check; empty when the projection is exactly what the log says."""

    replayed: int = 0
    snapshot: dict[int, int] = field(default_factory=dict)
    differences: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not self.differences


async def _compare(conn: asyncpg.Connection, live: str, shadow: str, snapshot: dict[int, int],
                   tenants: list[str] | None, verdict: Verdict) -> None:
    parts = sorted(snapshot)
    args = (parts, [snapshot[p] for p in parts], tenants)
    for name, (select, live_src, shadow_src) in CHECKS.items():
        live_rows = select.format(src=live_src.format(live=live, shadow=shadow))
        shadow_rows = select.format(src=shadow_src.format(shadow=shadow, live=live))
        for label, a, b in (("in the live projection only", live_rows, shadow_rows),
                            ("in the log only", shadow_rows, live_rows)):
            query = BELOW.format(live=live) + f"({a}) EXCEPT ({b}) LIMIT {DIFF_ROWS_MAX}"
            rows = await conn.fetch(query, *args)
            if rows:
                verdict.differences[f"{name}, {label}"] = [str(tuple(r)) for r in rows]
    for name, query in SELF_CHECKS.items():
        rows = await conn.fetch(query.format(live=live) + f" LIMIT {DIFF_ROWS_MAX}", tenants)
        if rows:
            verdict.differences[name] = [str(tuple(r)) for r in rows]


async def verify(url: str, bootstrap: str, topic: str, tenants: list[str] | None = None) -> Verdict:
    """Compare the live projection with a fresh replay of the log (of `tenants` only, when given)."""
    conn = await asyncpg.connect(url)
    scratch = "verify_" + datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    verdict = Verdict()
    try:
        live = str(await conn.fetchval("SELECT active_schema FROM ledger_meta"))
        schema_path(live)  # refuses a name that is not a projection schema's before it is put into SQL
        verdict.snapshot = await committed_offsets(conn, live)
        await conn.execute("SELECT ledger_create_projection($1)", scratch)
        wanted = None if tenants is None else {t.encode() for t in tenants}

        def keep(record: Record) -> bool:
            return wanted is None or record.key in wanted

        stats = await replay(lambda: asyncpg.connect(url), bootstrap, topic, scratch, until=verdict.snapshot,
                             keep=keep)
        verdict.replayed = stats.records
        await _compare(conn, live, scratch, verdict.snapshot, tenants, verdict)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
        await conn.close()
    return verdict
