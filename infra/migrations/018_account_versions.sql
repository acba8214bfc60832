-- Contract v3's conditions on a write: every account read shows `version`, the count of committed records that
-- changed the account (a transaction or hold naming it, a capture, void or expiry of a hold naming it, a
-- policy update). Kept in `accounts`, which the projector already reads for every account a batch touches
-- (its policy): an account with no policy gets a row with the empty policy. `log_partition`, `log_offset` and
-- `updated_at` of a row are now the last record that changed the account.

-- The versions of the history already projected (in the schema on the search path), counted from its rows as
-- the fold counts them, so that `if_version` is decided alike by this projection and by a replay of the log: per
-- committed record, each account its postings name (a capture's and a reversal's as stored; a void's and an
-- expiry's, its hold's), once; a policy update, its account. The row's position is the last of those records
-- (for an expiry, the hold's own: the record that expired it is not kept; `ledger verify` compares no positions).
CREATE FUNCTION ledger_count_versions() RETURNS void
    LANGUAGE plpgsql AS $fn$
BEGIN
    WITH changed AS (
        SELECT t.tenant, n.account, t.log_partition, t.log_offset, coalesce(t.committed_at, t.created_at) AS at
        FROM transactions t
        CROSS JOIN LATERAL (SELECT DISTINCT x.account FROM jsonb_array_elements(t.postings) p,
                            LATERAL (VALUES (p->>'source'), (p->>'destination')) x(account)
                            WHERE (p->>'amount')::numeric <> 0) n
        WHERE t.status = 'committed' AND t.kind IN ('transfer', 'hold', 'capture', 'reverse')
        UNION ALL
        SELECT t.tenant, n.account, t.log_partition, t.log_offset, coalesce(t.committed_at, t.created_at)
        FROM transactions t JOIN holds h ON h.tenant = t.tenant AND h.id = t.target
        CROSS JOIN LATERAL (SELECT DISTINCT x.account FROM jsonb_array_elements(h.postings) p,
                            LATERAL (VALUES (p->>'source'), (p->>'destination')) x(account)
                            WHERE (p->>'amount')::numeric <> 0) n
        WHERE t.status = 'committed' AND t.kind = 'void'
        UNION ALL
        SELECT h.tenant, n.account, h.log_partition, h.log_offset, h.closed_at
        FROM holds h
        CROSS JOIN LATERAL (SELECT DISTINCT x.account FROM jsonb_array_elements(h.postings) p,
                            LATERAL (VALUES (p->>'source'), (p->>'destination')) x(account)
                            WHERE (p->>'amount')::numeric <> 0) n
        WHERE h.state = 'expired'
        UNION ALL
        SELECT t.tenant, t.target, t.log_partition, t.log_offset, coalesce(t.committed_at, t.created_at)
        FROM transactions t WHERE t.status = 'committed' AND t.kind = 'policy'),
    counted AS (
        SELECT DISTINCT ON (tenant, account) tenant, account, log_partition, log_offset, at,
               count(*) OVER (PARTITION BY tenant, account) AS version
        FROM changed ORDER BY tenant, account, log_offset DESC)
    INSERT INTO accounts (tenant, account, metadata, overdraft_limit, frozen, log_partition, log_offset,
                          updated_at, version)
    SELECT tenant, account, '{}', '{}', false, log_partition, log_offset, at, version FROM counted
    ON CONFLICT (tenant, account) DO UPDATE SET version = excluded.version;
END
$fn$;

CREATE FUNCTION ledger_projection_v10(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);
    ALTER TABLE accounts ADD COLUMN version bigint NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD CONSTRAINT accounts_version_not_negative CHECK (version >= 0);
    PERFORM public.ledger_count_versions();
    PERFORM set_config('search_path', previous, true);
END
$fn$;

SELECT ledger_apply_projection_step('ledger_projection_v10');

DROP FUNCTION api_balances(text, text);
CREATE FUNCTION api_balances(p_tenant text, p_account text)
    RETURNS TABLE (asset text, balance bigint, held bigint, overdraft_limit bigint, log_partition integer,
                   log_offset bigint, metadata jsonb, frozen boolean, version bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT b.asset, b.balance, b.held, b.overdraft_limit, b.log_partition, b.log_offset, a.metadata,
                        a.frozen, a.version
        FROM (SELECT NULL) AS one
        LEFT JOIN balances b ON b.tenant = p_tenant AND b.account = p_account
        LEFT JOIN accounts a ON a.tenant = p_tenant AND a.account = p_account
        WHERE b.asset IS NOT NULL OR a.account IS NOT NULL;
END
$$;

DROP FUNCTION api_accounts(text, text, text, text, integer);
CREATE FUNCTION api_accounts(p_tenant text, p_low text, p_high text, p_after text, p_limit integer)
    RETURNS TABLE (account text, asset text, balance bigint, held bigint, overdraft_limit bigint,
                   log_partition integer, log_offset bigint, metadata jsonb, frozen boolean, version bigint)
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
               a.metadata, a.frozen, a.version
        FROM page JOIN balances b ON b.tenant = p_tenant AND b.account = page.account
        LEFT JOIN accounts a ON a.tenant = p_tenant AND a.account = page.account
        ORDER BY b.account, b.asset;
END
$$;

DROP FUNCTION api_snapshot(text, text[]);
CREATE FUNCTION api_snapshot(p_tenant text, p_accounts text[])
    RETURNS TABLE (account text, asset text, balance bigint, held bigint, overdraft_limit bigint,
                   log_partition integer, log_offset bigint, metadata jsonb, frozen boolean, version bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY
        SELECT b.account, b.asset, b.balance, b.held, b.overdraft_limit, b.log_partition, b.log_offset,
               a.metadata, a.frozen, a.version
        FROM balances b LEFT JOIN accounts a ON a.tenant = p_tenant AND a.account = b.account
        WHERE b.tenant = p_tenant AND b.account = ANY(p_accounts)
        UNION ALL
        SELECT a.account, NULL, NULL, NULL, NULL, NULL, NULL, a.metadata, a.frozen, a.version
        FROM accounts a
        WHERE a.tenant = p_tenant AND a.account = ANY(p_accounts)
          AND NOT EXISTS (SELECT FROM balances b WHERE b.tenant = p_tenant AND b.account = a.account)
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, NULL, o.log_partition, o.next_offset - 1, NULL, NULL, NULL
        FROM tenants t JOIN projection_offsets o ON o.log_partition = t.log_partition
        WHERE t.id = p_tenant AND o.topic = 'ledger.transactions';
END
$$;

REVOKE ALL ON FUNCTION api_balances(text, text), api_accounts(text, text, text, text, integer),
    api_snapshot(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_balances(text, text), api_accounts(text, text, text, text, integer),
    api_snapshot(text, text[]) TO ledger_api;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;
