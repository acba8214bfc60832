-- A page of the tenant's monitors, by id after `p_after`; only the active ones unless `p_all`.
CREATE OR REPLACE FUNCTION api_monitors(p_tenant text, p_after text, p_limit integer, p_all boolean)
    RETURNS TABLE (id text, account text, asset text, below bigint, above bigint, active boolean,
                   log_partition integer, log_offset bigint, created_at timestamptz, removed_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT m.id, m.account, m.asset, m.below, m.above, m.active, m.log_partition, m.log_offset,
                        m.created_at, m.removed_at
        FROM monitors m
        WHERE m.tenant = p_tenant AND m.id > coalesce(p_after, '') AND (p_all OR m.active)
        ORDER BY m.id LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION api_monitors(text, text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_monitors(text, text, integer, boolean) TO ledger_api;
