-- A committed write's answer and `GET .../transactions/{id}` carry `balances_after` (contract v3), every touched
-- account's posted balance right after it: the balance after its last leg on each (account, asset), read from
-- the entries' key (tenant, account, log_offset, leg) with the accounts its postings name.
CREATE OR REPLACE FUNCTION api_balances_after(p_tenant text, p_id text, p_accounts text[], p_offset bigint)
    RETURNS TABLE (account text, asset text, balance_after bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT DISTINCT ON (e.account, e.asset) e.account, e.asset, e.balance_after FROM entries e
        WHERE e.tenant = p_tenant AND e.account = ANY(p_accounts) AND e.log_offset = p_offset
          AND e.transaction_id = p_id
        ORDER BY e.account, e.asset, e.leg DESC;
END
$$;

REVOKE ALL ON FUNCTION api_balances_after(text, text, text[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_balances_after(text, text, text[], bigint) TO ledger_api;
