-- A hold: its request (postings, metadata, the rejection reason if any) and its state, in one round trip; by
-- its own id, or by the id of a repeat of its request (handed out too), which stands for it. The id is resolved
-- first, into a variable, so the lookup is a plain equality on the primary key (see api_chain_link.sql).
CREATE OR REPLACE FUNCTION api_hold(p_tenant text, p_id text)
    RETURNS TABLE (id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
                   expires_at timestamptz, closed_by text, closed_at timestamptz, log_partition integer,
                   log_offset bigint, created_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
DECLARE
    v_id text;
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    v_id := coalesce((SELECT r.original_id FROM replays r WHERE r.tenant = p_tenant AND r.id = p_id), p_id);
    RETURN QUERY SELECT t.id, coalesce(h.state, t.status), t.reason, t.postings, t.metadata, t.reference,
                        h.expires_at, h.closed_by, h.closed_at, t.log_partition, t.log_offset, t.created_at
        FROM transactions t LEFT JOIN holds h ON h.tenant = t.tenant AND h.id = t.id
        WHERE t.tenant = p_tenant AND t.id = v_id AND t.kind = 'hold';
END
$$;

REVOKE ALL ON FUNCTION api_hold(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_hold(text, text) TO ledger_api;
