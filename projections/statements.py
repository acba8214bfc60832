"""The projector's SQL: what it reads to load a batch's state, and how it writes a batch's rows (set-based:
`unnest` arrays and COPY, a few statements per batch whatever its size)."""

from __future__ import annotations

from ledger.rows import BALANCE_COLUMNS

OPEN_BATCH = "SELECT log_partition, next_offset, projection FROM projector_open_batch($1, $2::int[], $3)"
SELECT_BALANCES = """
SELECT b.tenant, b.account, b.asset, b.balance, b.held, b.credits_total, b.entries_count FROM balances b
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, account, asset)
  ON b.tenant = k.tenant AND b.account = k.account AND b.asset = k.asset
"""
# An id is taken by a decided request, or by a repeat of one (then it stands for the original).
SELECT_BY_ID = """
SELECT t.tenant, t.id AS asked, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset
FROM transactions t
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON t.tenant = k.tenant AND t.id = k.id
UNION ALL
SELECT t.tenant, r.id AS asked, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset
FROM replays r
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON r.tenant = k.tenant AND r.id = k.id
JOIN transactions t ON t.tenant = r.tenant AND t.id = r.original_id
"""
# A key is bound by a request (`idempotency_keys`) or by a whole batch (`batches`, with its items' ids).
SELECT_BY_KEY = """
SELECT i.key, t.tenant, t.id, t.status, t.reason, t.fingerprint, t.log_partition, t.log_offset, NULL::text[] AS items
FROM idempotency_keys i
JOIN unnest($1::text[], $2::text[]) AS k(tenant, key) ON i.tenant = k.tenant AND i.key = k.key
JOIN transactions t ON t.tenant = i.tenant AND t.id = i.transaction_id
UNION ALL
SELECT b.idempotency_key, b.tenant, b.id, b.status, b.reason, b.fingerprint, b.log_partition, b.log_offset, b.items
FROM batches b
JOIN unnest($1::text[], $2::text[]) AS k(tenant, key) ON b.tenant = k.tenant AND b.idempotency_key = k.key
"""
# Whether each tenant exists, and how many monitors it has active (the fold bounds them per tenant).
SELECT_TENANTS = """
SELECT t.id, (SELECT count(*) FROM monitors m WHERE m.tenant = t.id AND m.active) AS monitors FROM tenants t
WHERE t.id = ANY($1::text[])
"""
SELECT_CHAINS = "SELECT tenant, count, head FROM chains WHERE tenant = ANY($1::text[])"
UPSERT_CHAINS = """
INSERT INTO chains (tenant, count, head, log_partition, log_offset)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::int[], $5::bigint[])
ON CONFLICT (tenant) DO UPDATE SET count = excluded.count, head = excluded.head,
    log_partition = excluded.log_partition, log_offset = excluded.log_offset
"""
SELECT_BATCHES = """
SELECT b.tenant, b.id, b.items FROM batches b
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON b.tenant = k.tenant AND b.id = k.id
"""
HOLD_FIELDS = ("h.tenant, h.id, h.state, h.postings, h.expires_at, h.log_partition, h.log_offset, h.closed_by,"
               " h.closed_at")
SELECT_HOLDS = f"""
SELECT {HOLD_FIELDS} FROM holds h
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON h.tenant = k.tenant AND h.id = k.id
"""
# Open holds of these partitions whose time has come by the batch's last record (index holds_open_by_expiry).
SELECT_DUE_HOLDS = f"""
SELECT {HOLD_FIELDS} FROM holds h
WHERE h.state = 'held' AND h.log_partition = ANY($1::int[]) AND h.expires_at <= $2
"""
# With each account's policy and version, its active balance monitors (a row each, `monitor` set) in the order
# they were created: one round trip, and most accounts have none (an index probe on an empty partial index).
SELECT_POLICIES = """
SELECT a.tenant, a.account, a.metadata, a.overdraft_limit, a.frozen, a.version,
       NULL::text AS monitor, NULL::text AS asset, NULL::bigint AS below, NULL::bigint AS above, 0::bigint AS o
FROM accounts a
JOIN unnest($1::text[], $2::text[]) AS k(tenant, account) ON a.tenant = k.tenant AND a.account = k.account
UNION ALL
SELECT m.tenant, m.account, NULL, NULL, NULL, NULL, m.id, m.asset, m.below, m.above, m.log_offset FROM monitors m
JOIN unnest($1::text[], $2::text[]) AS k(tenant, account) ON m.tenant = k.tenant AND m.account = k.account
WHERE m.active
ORDER BY o
"""
SELECT_MONITORS = """
SELECT m.tenant, m.id, m.account, m.asset, m.below, m.above, m.active FROM monitors m
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON m.tenant = k.tenant AND m.id = k.id
"""
UPDATE_MONITORS = """
UPDATE monitors m SET active = false, removed_at = c.at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS c(tenant, id, at)
WHERE m.tenant = c.tenant AND m.id = c.id
"""
# An account's version (contract v3), and the position and time of the last record that changed it (whatever
# the batches were: a replay writes the same row); an account with no policy gets a row of its own, with the
# empty policy (what no row means).
UPSERT_VERSIONS = """
INSERT INTO accounts (tenant, account, metadata, overdraft_limit, frozen, log_partition, log_offset, updated_at,
                      version)
SELECT k.tenant, k.account, '{}', '{}', false, k.p, k.o, k.at, k.v
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::timestamptz[], $6::bigint[])
    AS k(tenant, account, p, o, at, v)
ON CONFLICT (tenant, account) DO UPDATE
SET version = excluded.version, log_partition = excluded.log_partition, log_offset = excluded.log_offset,
    updated_at = excluded.updated_at
"""
UPSERT_ACCOUNTS = """
INSERT INTO accounts (tenant, account, metadata, overdraft_limit, frozen, log_partition, log_offset, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::bool[], $6::int[], $7::bigint[],
                     $8::timestamptz[])
ON CONFLICT (tenant, account) DO UPDATE
SET metadata = excluded.metadata, overdraft_limit = excluded.overdraft_limit, frozen = excluded.frozen,
    log_partition = excluded.log_partition, log_offset = excluded.log_offset, updated_at = excluded.updated_at
"""
SELECT_ORIGINALS = """
SELECT t.tenant, t.id, t.kind, t.status, t.postings, t.reversed FROM transactions t
JOIN unnest($1::text[], $2::text[]) AS k(tenant, id) ON t.tenant = k.tenant AND t.id = k.id
"""
UPSERT_BALANCES = f"""
INSERT INTO balances ({", ".join(BALANCE_COLUMNS)})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::int[],
                     $8::bigint[], $9::numeric[], $10::bigint[])
ON CONFLICT (tenant, account, asset) DO UPDATE
SET balance = excluded.balance, held = excluded.held, overdraft_limit = excluded.overdraft_limit,
    log_partition = excluded.log_partition, log_offset = excluded.log_offset,
    credits_total = excluded.credits_total, entries_count = excluded.entries_count
"""
UPDATE_HOLDS = """
UPDATE holds h SET state = c.state, closed_by = c.closed_by, closed_at = c.closed_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) AS c(tenant, id, state, closed_by,
                                                                                     closed_at)
WHERE h.tenant = c.tenant AND h.id = c.id
"""
UPDATE_REVERSED = """
UPDATE transactions t SET reversed = c.reversed
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS c(tenant, id, reversed)
WHERE t.tenant = c.tenant AND t.id = c.id
"""
# A batch's last round trip: its balances, its offsets and the API's notifications (delivered on commit only,
# so a waiter never wakes for rows it cannot see yet). Data-modifying CTEs run to completion, read or not.
WRITE_TAIL = f"""
WITH moved AS ({UPSERT_BALANCES} RETURNING 1),
     advanced AS (UPDATE projection_offsets o SET next_offset = n.next_offset, updated_at = now()
                  FROM unnest($12::int[], $13::bigint[]) AS n(log_partition, next_offset)
                  WHERE o.topic = $11 AND o.log_partition = n.log_partition RETURNING 1)
SELECT pg_notify($14, p) FROM unnest($15::text[]) AS p
"""  # unnest yields the array in order, and notifications are delivered in the order they were sent
NOTIFY_TENANTS = "SELECT pg_notify($1, 'tenant:' || t) FROM unnest($2::text[]) AS t"
