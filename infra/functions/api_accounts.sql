-- A page of accounts by address in [p_low, p_high), after p_after, with their balance rows, policy and version.
CREATE OR REPLACE FUNCTION api_accounts(p_tenant text, p_low text, p_high text, p_after text, p_limit integer)
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

REVOKE ALL ON FUNCTION api_accounts(text, text, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_accounts(text, text, text, text, integer) TO ledger_api;
