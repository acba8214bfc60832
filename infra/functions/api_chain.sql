-- A tenant's chain: its count, head and the position of its last link (no row: an empty chain).
CREATE OR REPLACE FUNCTION api_chain(p_tenant text)
    RETURNS TABLE (count bigint, head bytea, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT c.count, c.head, c.log_partition, c.log_offset FROM chains c WHERE c.tenant = p_tenant;
END
$$;

REVOKE ALL ON FUNCTION api_chain(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_chain(text) TO ledger_api;
