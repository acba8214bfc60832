-- A page of history, newest first, strictly before the cursor (log_offset, leg); keyset, so its cost
-- does not depend on how deep the page is.
CREATE OR REPLACE FUNCTION api_entries(p_tenant text, p_account text, p_asset text,
                                       p_before_offset bigint, p_before_leg integer, p_limit integer)
    RETURNS TABLE (transaction_id text, asset text, amount bigint, balance_after bigint,
                   committed_at timestamptz, log_offset bigint, leg integer)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
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

REVOKE ALL ON FUNCTION api_entries(text, text, text, bigint, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_entries(text, text, text, bigint, integer, integer) TO ledger_api;
