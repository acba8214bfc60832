-- A page of a tenant's transactions, newest first, strictly before (p_before_offset, p_before_id): the SQL is
-- ledger_transactions_query's for the filters given, a time range the offset range ledger_time_range finds.
CREATE OR REPLACE FUNCTION api_transactions(p_tenant text, p_account text, p_reference text, p_status text,
                                            p_metadata jsonb, p_since timestamptz, p_until timestamptz,
                                            p_before_offset bigint, p_before_id text, p_limit integer)
    RETURNS TABLE (tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
                   idempotency_key text, log_partition integer, log_offset bigint, created_at timestamptz,
                   committed_at timestamptz, kind text, target text, reversed bigint, replay_of text)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
DECLARE
    bounds record;
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    bounds := ledger_time_range(p_tenant, p_since, p_until);
    RETURN QUERY EXECUTE
        'SELECT q.tenant, q.id, q.status, q.reason, q.postings, q.metadata, q.reference, q.idempotency_key,'
        || ' q.log_partition, q.log_offset, q.created_at, q.committed_at, q.kind, q.target, q.reversed,'
        || ' NULL::text FROM ('
        || ledger_transactions_query(p_account IS NOT NULL, p_reference IS NOT NULL, p_status IS NOT NULL,
                                     p_metadata IS NOT NULL) || ') q'
        USING p_tenant, p_account, p_reference, p_status, p_metadata, bounds.low,
              least(p_before_offset, bounds.high), CASE WHEN p_before_offset < bounds.high THEN p_before_id
                                                        ELSE '' END, p_limit;
END
$$;

REVOKE ALL ON FUNCTION api_transactions(text, text, text, text, jsonb, timestamptz, timestamptz, bigint, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_transactions(text, text, text, text, jsonb, timestamptz, timestamptz, bigint, text, integer) TO ledger_api;
