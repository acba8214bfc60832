-- Sums per asset over the accounts in [p_low, p_high), and how many accounts (the row whose asset is NULL):
-- it reads every matching row.
CREATE OR REPLACE FUNCTION api_balance_sums(p_tenant text, p_low text, p_high text)
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

REVOKE ALL ON FUNCTION api_balance_sums(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_balance_sums(text, text, text) TO ledger_api;
