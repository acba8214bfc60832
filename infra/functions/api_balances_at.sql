-- An account's balance in each asset as of `p_at`: the balance after its last entry committed by then (entries
-- carry the balance after each leg, so no read ever sums history).
CREATE OR REPLACE FUNCTION api_balances_at(p_tenant text, p_account text, p_at timestamptz)
    RETURNS TABLE (asset text, balance bigint, log_offset bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT DISTINCT ON (e.asset) e.asset, e.balance_after, e.log_offset
        FROM entries e
        WHERE e.tenant = p_tenant AND e.account = p_account AND e.committed_at <= p_at
        ORDER BY e.asset, e.log_offset DESC, e.leg DESC;
END
$$;

REVOKE ALL ON FUNCTION api_balances_at(text, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_balances_at(text, text, timestamptz) TO ledger_api;
