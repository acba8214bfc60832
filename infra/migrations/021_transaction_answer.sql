-- A waited write's answer in one round trip: the transaction as `api_transaction` shows it, its accounts'
-- balances right after it (as `api_balances_after`) and its chain link (as `api_chain_link`). The API made
-- three calls for it, each a round trip and a plpgsql call: ~0.85 ms of PostgreSQL per waited write
-- (pg_stat_statements, 64 waited connections), and the API's own cost of three queries.

CREATE FUNCTION api_transaction_answer(p_tenant text, p_id text)
    RETURNS TABLE (tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
                   idempotency_key text, fingerprint bytea, log_partition integer, log_offset bigint,
                   created_at timestamptz, committed_at timestamptz, error text, replay_of text, kind text,
                   target text, reversed bigint, balances_after jsonb, hash bytea, previous_hash bytea)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
DECLARE
    v_tx api_transaction_row;
    v_id text;
    v_accounts text[];
    v_after jsonb;
    v_hash bytea;
    v_previous bytea;
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    SELECT * INTO v_tx FROM api_transaction(p_tenant, p_id);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    v_id := coalesce(v_tx.replay_of, v_tx.id);  -- a repeat's entries and link are its original's
    IF v_tx.status = 'committed' AND jsonb_typeof(v_tx.postings) = 'array' THEN
        v_accounts := ARRAY(SELECT DISTINCT s.a FROM jsonb_array_elements(v_tx.postings) p,
                                 LATERAL (VALUES (p->>'source'), (p->>'destination')) AS s(a));
        SELECT jsonb_object_agg(b.account, b.assets) INTO v_after FROM (
            SELECT d.account, jsonb_object_agg(d.asset, d.balance_after) AS assets FROM (
                SELECT DISTINCT ON (e.account, e.asset) e.account, e.asset, e.balance_after FROM entries e
                WHERE e.tenant = p_tenant AND e.account = ANY(v_accounts) AND e.log_offset = v_tx.log_offset
                  AND e.transaction_id = v_id
                ORDER BY e.account, e.asset, e.leg DESC) d
            GROUP BY d.account) b;
    END IF;
    SELECT t.hash, t.previous_hash INTO v_hash, v_previous FROM transactions t
        WHERE t.tenant = p_tenant AND t.id = v_id AND t.hash IS NOT NULL;
    RETURN QUERY SELECT (v_tx).*, v_after, v_hash, v_previous;
END
$$;
REVOKE ALL ON FUNCTION api_transaction_answer(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_transaction_answer(text, text) TO ledger_api;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;
