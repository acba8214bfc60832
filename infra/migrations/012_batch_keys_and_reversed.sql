-- Issue 21's defects that reach the projection:
--
-- * `batches`: a batch posted with an `Idempotency-Key` binds the key whole (contract v3): the batch's
--   fingerprint, its decision and its items' ids in order, so that a repeat replays each item. A key is bound
--   by a row here or by one of `idempotency_keys`, never both (the fold keeps one map of keys).
-- * A partial amount on a capture or reversal of several postings was rejected `invalid`; it is now
--   `amount_needs_one_posting` (the API answers 422 for it), the reason a replay of the log gives.

CREATE FUNCTION ledger_projection_v7(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    CREATE TABLE batches (
        tenant           text NOT NULL,
        id               text NOT NULL,
        idempotency_key  text NOT NULL,
        fingerprint      bytea NOT NULL,
        status           text NOT NULL CHECK (status IN ('committed', 'rejected')),
        reason           text,
        atomic           boolean NOT NULL,
        items            text[] NOT NULL,
        log_partition    integer NOT NULL,
        log_offset       bigint NOT NULL,
        created_at       timestamptz NOT NULL,
        PRIMARY KEY (tenant, id),
        UNIQUE (tenant, idempotency_key)
    );
    ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
    ALTER TABLE batches FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON batches USING (tenant = public.ledger_tenant());
    GRANT SELECT ON batches TO ledger_api;
    GRANT SELECT, INSERT ON batches TO ledger_projector;

    UPDATE transactions SET reason = 'amount_needs_one_posting'
    WHERE status = 'rejected' AND reason = 'invalid' AND kind IN ('capture', 'reverse') AND error IS NULL;
    -- A malformed request binds no key (a replay binds none for it).
    DELETE FROM idempotency_keys k USING transactions t
    WHERE t.tenant = k.tenant AND t.id = k.transaction_id AND t.reason = 'amount_needs_one_posting';

    PERFORM set_config('search_path', previous, true);
END
$fn$;

SELECT ledger_apply_projection_step('ledger_projection_v7');

-- The batch a key binds, for the API's answer to a repeat: its fingerprint and its items' ids, in order.
CREATE FUNCTION api_batch_by_key(p_tenant text, p_key text)
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

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;
