-- A balance monitor, by its id or by the id of a repeat of the request that created it. The id is resolved
-- first, into a variable, so the lookup is a plain equality on the primary key (see api_chain_link.sql).
CREATE OR REPLACE FUNCTION api_monitor(p_tenant text, p_id text)
    RETURNS TABLE (id text, account text, asset text, below bigint, above bigint, active boolean,
                   log_partition integer, log_offset bigint, created_at timestamptz, removed_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
DECLARE
    v_id text;
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    v_id := coalesce((SELECT r.original_id FROM replays r WHERE r.tenant = p_tenant AND r.id = p_id), p_id);
    RETURN QUERY SELECT m.id, m.account, m.asset, m.below, m.above, m.active, m.log_partition, m.log_offset,
                        m.created_at, m.removed_at
        FROM monitors m
        WHERE m.tenant = p_tenant AND m.id = v_id;
END
$$;

REVOKE ALL ON FUNCTION api_monitor(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_monitor(text, text) TO ledger_api;
