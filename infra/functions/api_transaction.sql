-- A transaction by id: a decided request, or a repeat of one (`replay_of` names the original, whose decision,
-- postings and position it shows). Its row type, api_transaction_row, is a versioned migration's
-- (infra/migrations/100_baseline.sql).
CREATE OR REPLACE FUNCTION api_transaction(p_tenant text, p_id text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error,
                        NULL::text, t.kind, t.target, t.reversed
        FROM transactions t WHERE t.tenant = p_tenant AND t.id = p_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT t.tenant, r.id, t.status, t.reason, t.postings, t.metadata, t.reference,
                            t.idempotency_key, t.fingerprint, t.log_partition, t.log_offset, t.created_at,
                            t.committed_at, t.error, t.id, t.kind, t.target, t.reversed
            FROM replays r JOIN transactions t ON t.tenant = r.tenant AND t.id = r.original_id
            WHERE r.tenant = p_tenant AND r.id = p_id;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION api_transaction(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_transaction(text, text) TO ledger_api;
