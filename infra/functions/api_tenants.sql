-- Tenants as the log created them (not tenant data: every API instance loads the list), or the one `p_id` names.
CREATE OR REPLACE FUNCTION api_tenants(p_id text DEFAULT NULL)
    RETURNS TABLE (id text, name text, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql STABLE SET search_path = proj_v1, public AS $$
BEGIN
    RETURN QUERY SELECT t.id, t.name, t.log_partition, t.log_offset FROM tenants t
        WHERE p_id IS NULL OR t.id = p_id;
END
$$;

REVOKE ALL ON FUNCTION api_tenants(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_tenants(text) TO ledger_api;
