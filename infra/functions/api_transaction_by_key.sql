-- The transaction an idempotency key binds, as api_transaction shows it.
CREATE OR REPLACE FUNCTION api_transaction_by_key(p_tenant text, p_key text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error,
                        NULL::text, t.kind, t.target, t.reversed
        FROM idempotency_keys k
        JOIN transactions t ON t.tenant = k.tenant AND t.id = k.transaction_id
        WHERE k.tenant = p_tenant AND k.key = p_key;
END
$$;

REVOKE ALL ON FUNCTION api_transaction_by_key(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_transaction_by_key(text, text) TO ledger_api;
