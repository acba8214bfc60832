-- A waited write's answer in one round trip: the transaction as `api_transaction` shows it, its accounts'
-- balances right after it (`api_balances_after`) and its chain link (`api_chain_link`), each read by the
-- function that reads it for the other routes. The API made three calls for it, each a round trip and a plpgsql
-- call: ~0.85 ms of PostgreSQL per waited write (pg_stat_statements, 64 waited connections), and the API's own
-- cost of three queries.
CREATE OR REPLACE FUNCTION api_transaction_answer(p_tenant text, p_id text)
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
            SELECT a.account, jsonb_object_agg(a.asset, a.balance_after) AS assets
            FROM api_balances_after(p_tenant, v_id, v_accounts, v_tx.log_offset) a
            GROUP BY a.account) b;
    END IF;
    SELECT l.hash, l.previous_hash INTO v_hash, v_previous FROM api_chain_link(p_tenant, v_id) l;
    RETURN QUERY SELECT (v_tx).*, v_after, v_hash, v_previous;
END
$$;

REVOKE ALL ON FUNCTION api_transaction_answer(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_transaction_answer(text, text) TO ledger_api;
