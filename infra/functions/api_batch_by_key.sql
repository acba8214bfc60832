-- The batch a key binds, for the API's answer to a repeat: its fingerprint and its items' ids, in order.
CREATE OR REPLACE FUNCTION api_batch_by_key(p_tenant text, p_key text)
    RETURNS TABLE (id text, fingerprint bytea, status text, reason text, items text[])
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT b.id, b.fingerprint, b.status, b.reason, b.items
        FROM batches b WHERE b.tenant = p_tenant AND b.idempotency_key = p_key;
END
$$;

REVOKE ALL ON FUNCTION api_batch_by_key(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_batch_by_key(text, text) TO ledger_api;
