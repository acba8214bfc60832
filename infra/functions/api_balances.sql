-- An account's balances with their held amounts and limits, and its policy and version, in one round trip (two
-- index lookups: the balance rows and the account's row).
CREATE OR REPLACE FUNCTION api_balances(p_tenant text, p_account text)
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

REVOKE ALL ON FUNCTION api_balances(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_balances(text, text) TO ledger_api;
