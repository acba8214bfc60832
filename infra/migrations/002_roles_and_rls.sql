-- Two roles: the API reads one tenant at a time under row-level security; the projector writes every
-- tenant's rows in set-based batches and so bypasses it. Neither owns the tables.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_api') THEN
        CREATE ROLE ledger_api LOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_projector') THEN
        CREATE ROLE ledger_projector LOGIN BYPASSRLS;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO ledger_api, ledger_projector;

GRANT SELECT ON transactions, balances, entries, idempotency_keys, projection_offsets TO ledger_api;
GRANT SELECT, INSERT, UPDATE ON tenants, api_keys TO ledger_api;

GRANT SELECT, INSERT, UPDATE ON transactions, balances, entries, idempotency_keys,
    projection_offsets, invalid_events TO ledger_projector;
GRANT SELECT ON tenants TO ledger_projector;

-- The tenant a statement may see; unset (NULL) sees nothing.
CREATE FUNCTION ledger_tenant() RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('ledger.tenant', true), '') $$;

ALTER TABLE transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE transactions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON transactions USING (tenant = ledger_tenant());

ALTER TABLE balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE balances FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON balances USING (tenant = ledger_tenant());

ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entries USING (tenant = ledger_tenant());

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_keys USING (tenant = ledger_tenant());

-- One round trip per read: each function sets the tenant for its own transaction only
-- (set_config(..., true)), so no tenant context survives on a pooled connection.

CREATE FUNCTION api_balances(p_tenant text, p_account text)
    RETURNS TABLE (asset text, balance bigint, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT b.asset, b.balance, b.log_partition, b.log_offset
        FROM balances b WHERE b.tenant = p_tenant AND b.account = p_account;
END
$$;

CREATE FUNCTION api_balances_at(p_tenant text, p_account text, p_at timestamptz)
    RETURNS TABLE (asset text, balance bigint, log_offset bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT DISTINCT ON (e.asset) e.asset, e.balance_after, e.log_offset
        FROM entries e
        WHERE e.tenant = p_tenant AND e.account = p_account AND e.committed_at <= p_at
        ORDER BY e.asset, e.log_offset DESC, e.leg DESC;
END
$$;

CREATE FUNCTION api_transaction(p_tenant text, p_id text)
    RETURNS SETOF transactions
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT * FROM transactions t WHERE t.tenant = p_tenant AND t.id = p_id;
END
$$;

CREATE FUNCTION api_transaction_by_key(p_tenant text, p_key text)
    RETURNS SETOF transactions
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.* FROM idempotency_keys k
        JOIN transactions t ON t.tenant = k.tenant AND t.id = k.transaction_id
        WHERE k.tenant = p_tenant AND k.key = p_key;
END
$$;

-- A page of history, newest first, strictly before the cursor (log_offset, leg); keyset, so its cost
-- does not depend on how deep the page is.
CREATE FUNCTION api_entries(p_tenant text, p_account text, p_asset text,
                            p_before_offset bigint, p_before_leg integer, p_limit integer)
    RETURNS TABLE (transaction_id text, asset text, amount bigint, balance_after bigint,
                   committed_at timestamptz, log_offset bigint, leg integer)
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    IF p_asset IS NULL THEN
        RETURN QUERY SELECT e.transaction_id, e.asset, e.amount, e.balance_after, e.committed_at,
                            e.log_offset, e.leg
            FROM entries e
            WHERE e.tenant = p_tenant AND e.account = p_account
              AND (e.log_offset, e.leg) < (p_before_offset, p_before_leg)
            ORDER BY e.log_offset DESC, e.leg DESC
            LIMIT p_limit;
    ELSE
        RETURN QUERY SELECT e.transaction_id, e.asset, e.amount, e.balance_after, e.committed_at,
                            e.log_offset, e.leg
            FROM entries e
            WHERE e.tenant = p_tenant AND e.account = p_account AND e.asset = p_asset
              AND (e.log_offset, e.leg) < (p_before_offset, p_before_leg)
            ORDER BY e.log_offset DESC, e.leg DESC
            LIMIT p_limit;
    END IF;
END
$$;

GRANT EXECUTE ON FUNCTION ledger_tenant(), api_balances(text, text), api_balances_at(text, text, timestamptz),
    api_transaction(text, text), api_transaction_by_key(text, text),
    api_entries(text, text, text, bigint, integer, integer) TO ledger_api;
