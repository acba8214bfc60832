-- Contract v2's queries, each served by an index: a page costs what its rows cost, whatever the tenant's size;
-- the metadata filter and the prefix sums cost what their matching rows cost.
--
-- * Transactions come newest first by their place in the log, keyset on (log_offset, id): a tenant lives on one
--   partition, and the items of an atomic batch share their record's offset.
-- * By account: through entries, on (tenant, account, log_offset, transaction_id), which every committed
--   movement has. It streams: distinct transactions in index order, stopping at the page's size.
-- * By reference, by status: btree indexes that end in the keyset.
-- * By time: created_at is the record's broker time (LogAppendTime, non-decreasing along a partition). A time
--   range becomes an offset range, by two lookups on (tenant, created_at, log_offset).
-- * By metadata key and value: GIN with jsonb_path_ops, for containment (`metadata @> {"k": "v"}`). One index
--   serves every key, at about a third of the default jsonb_ops' size; the matches are then ordered.
-- * Accounts by address prefix: the balances primary key (tenant, account, asset), as a range.
-- Each shape is built by one function (`ledger_transactions_query`), so the EXPLAIN test checks the very SQL
-- the API runs.

-- GIN over (tenant, metadata): btree_gin lets the tenant lead the index, so a metadata filter reads one
-- tenant's matches only, and the planner sees both conditions served by one index.
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE FUNCTION ledger_projection_v5(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);
    CREATE INDEX transactions_by_position ON transactions (tenant, log_offset, id);
    CREATE INDEX transactions_by_reference ON transactions (tenant, reference, log_offset, id)
        WHERE reference IS NOT NULL;
    CREATE INDEX transactions_by_status ON transactions (tenant, status, log_offset, id);
    CREATE INDEX transactions_by_time ON transactions (tenant, created_at, log_offset);
    CREATE INDEX transactions_by_metadata ON transactions USING gin (tenant, metadata jsonb_path_ops);
    CREATE INDEX entries_by_transaction ON entries (tenant, account, log_offset, transaction_id);
    PERFORM set_config('search_path', previous, true);
END
$fn$;

CREATE OR REPLACE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    PERFORM ledger_create_projection_v1(p_schema);
    PERFORM ledger_projection_v2(p_schema);
    PERFORM ledger_invariants(p_schema);
    PERFORM ledger_projection_v3(p_schema);
    PERFORM ledger_projection_v4(p_schema);
    PERFORM ledger_projection_v5(p_schema);
    IF live IS NOT NULL AND live <> p_schema THEN
        EXECUTE format('INSERT INTO %I.tenants SELECT * FROM %I.tenants WHERE log_offset = -1', p_schema, live);
    END IF;
END
$fn$;

DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^(proj|verify)_' LOOP
        PERFORM ledger_projection_v5(s);
    END LOOP;
END
$$;

-- The SQL of a page of transactions for the filters given (NULL: not filtered), parameters $1..$9 in the order
-- of api_transactions': tenant, account, reference, status, metadata, low offset (exclusive), before offset,
-- before id, limit. Only the conditions asked for are in it, so the planner picks the index that suits them.
CREATE FUNCTION ledger_transactions_query(p_account boolean, p_reference boolean, p_status boolean,
                                          p_metadata boolean) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    filters text := '';
BEGIN
    IF p_reference THEN filters := filters || ' AND t.reference = $3'; END IF;
    IF p_status THEN filters := filters || ' AND t.status = $4'; END IF;
    IF p_metadata THEN filters := filters || ' AND t.metadata @> $5'; END IF;
    IF p_account THEN
        RETURN 'SELECT t.* FROM (SELECT DISTINCT e.log_offset, e.transaction_id FROM entries e'
            || ' WHERE e.tenant = $1 AND e.account = $2 AND e.log_offset > $6'
            || ' AND (e.log_offset, e.transaction_id) < ($7, $8)'
            || ' ORDER BY e.log_offset DESC, e.transaction_id DESC) m'
            || ' JOIN transactions t ON t.tenant = $1 AND t.id = m.transaction_id WHERE true' || filters
            || ' ORDER BY m.log_offset DESC, m.transaction_id DESC LIMIT $9';
    END IF;
    IF p_metadata THEN
        -- The matches come from the GIN index, then are ordered: without the fence (OFFSET 0), a guess that
        -- matches are common has the planner walk the tenant's whole history by position looking for them.
        RETURN 'SELECT t.* FROM api_metadata_matches($5) m JOIN transactions t ON t.tenant = $1 AND t.id = m.id'
            || ' WHERE t.log_offset > $6 AND (t.log_offset, t.id) < ($7, $8)'
            || replace(filters, ' AND t.metadata @> $5', '') || ' ORDER BY t.log_offset DESC, t.id DESC LIMIT $9';
    END IF;
    RETURN 'SELECT t.* FROM transactions t WHERE t.tenant = $1 AND t.log_offset > $6'
        || ' AND (t.log_offset, t.id) < ($7, $8)' || filters || ' ORDER BY t.log_offset DESC, t.id DESC LIMIT $9';
END
$$;

-- The ids of the current tenant's transactions whose metadata contains p_metadata, from the GIN index. Row-level
-- security would keep the index from serving the filter (containment is not a leakproof operator, so it may not
-- run below the policy), so this reads as the owner, limited to the tenant the calling read function set
-- (ledger_tenant()): it sees no more than the caller may. Named api_* so a switch of projection repoints it.
CREATE FUNCTION api_metadata_matches(p_metadata jsonb) RETURNS TABLE (id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = proj_v1, public AS $$
    SELECT x.id FROM transactions x WHERE x.tenant = ledger_tenant() AND x.metadata @> p_metadata
$$;

-- The offset range a time range covers in a tenant's log: (low exclusive, high exclusive).
CREATE FUNCTION ledger_time_range(p_tenant text, p_since timestamptz, p_until timestamptz,
                                  OUT low bigint, OUT high bigint)
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    low := -1;
    high := 9223372036854775807;
    IF p_since IS NOT NULL THEN
        low := coalesce((SELECT x.log_offset FROM transactions x WHERE x.tenant = p_tenant AND x.created_at >= p_since
                         ORDER BY x.created_at, x.log_offset LIMIT 1), high) - 1;
    END IF;
    IF p_until IS NOT NULL THEN
        high := coalesce((SELECT x.log_offset FROM transactions x WHERE x.tenant = p_tenant AND x.created_at <= p_until
                          ORDER BY x.created_at DESC, x.log_offset DESC LIMIT 1), -1) + 1;
    END IF;
END
$$;

-- A page of a tenant's transactions, newest first, strictly before (p_before_offset, p_before_id).
CREATE FUNCTION api_transactions(p_tenant text, p_account text, p_reference text, p_status text,
                                 p_metadata jsonb, p_since timestamptz, p_until timestamptz,
                                 p_before_offset bigint, p_before_id text, p_limit integer)
    RETURNS TABLE (tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
                   idempotency_key text, log_partition integer, log_offset bigint, created_at timestamptz,
                   committed_at timestamptz, kind text, target text, reversed bigint, replay_of text)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
DECLARE
    bounds record;
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    bounds := ledger_time_range(p_tenant, p_since, p_until);
    RETURN QUERY EXECUTE
        'SELECT q.tenant, q.id, q.status, q.reason, q.postings, q.metadata, q.reference, q.idempotency_key,'
        || ' q.log_partition, q.log_offset, q.created_at, q.committed_at, q.kind, q.target, q.reversed,'
        || ' NULL::text FROM ('
        || ledger_transactions_query(p_account IS NOT NULL, p_reference IS NOT NULL, p_status IS NOT NULL,
                                     p_metadata IS NOT NULL) || ') q'
        USING p_tenant, p_account, p_reference, p_status, p_metadata, bounds.low,
              least(p_before_offset, bounds.high), CASE WHEN p_before_offset < bounds.high THEN p_before_id
                                                        ELSE '' END, p_limit;
END
$$;

-- A page of accounts by address in [p_low, p_high), after p_after, with their balance rows and policy.
CREATE FUNCTION api_accounts(p_tenant text, p_low text, p_high text, p_after text, p_limit integer)
    RETURNS TABLE (account text, asset text, balance bigint, held bigint, overdraft_limit bigint,
                   log_partition integer, log_offset bigint, metadata jsonb, frozen boolean)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY
        WITH page AS (
            SELECT DISTINCT b.account FROM balances b
            WHERE b.tenant = p_tenant AND b.account >= greatest(p_low, p_after) AND b.account < p_high
              AND b.account <> coalesce(p_after, '')
            ORDER BY b.account LIMIT p_limit)
        SELECT b.account, b.asset, b.balance, b.held, b.overdraft_limit, b.log_partition, b.log_offset,
               a.metadata, a.frozen
        FROM page JOIN balances b ON b.tenant = p_tenant AND b.account = page.account
        LEFT JOIN accounts a ON a.tenant = p_tenant AND a.account = page.account
        ORDER BY b.account, b.asset;
END
$$;

-- Sums per asset over the accounts in [p_low, p_high), and how many accounts (the row whose asset is NULL):
-- it reads every matching row.
CREATE FUNCTION api_balance_sums(p_tenant text, p_low text, p_high text)
    RETURNS TABLE (asset text, balance numeric, accounts bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY
        SELECT b.asset, sum(b.balance), NULL::bigint FROM balances b
            WHERE b.tenant = p_tenant AND b.account >= p_low AND b.account < p_high GROUP BY b.asset
        UNION ALL
        SELECT NULL, NULL, count(DISTINCT b.account) FROM balances b
            WHERE b.tenant = p_tenant AND b.account >= p_low AND b.account < p_high;
END
$$;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;

GRANT EXECUTE ON FUNCTION api_transactions(text, text, text, text, jsonb, timestamptz, timestamptz, bigint, text,
                                           integer),
    api_accounts(text, text, text, text, integer), api_balance_sums(text, text, text),
    ledger_transactions_query(boolean, boolean, boolean, boolean), ledger_time_range(text, timestamptz, timestamptz),
    api_metadata_matches(jsonb) TO ledger_api;
