-- Contract v3's tamper-evident chain per tenant (ledger/chain.py): each committed transfer, capture and
-- reversal stores its place in its tenant's chain, its hash and the previous one's; `chains` holds each
-- tenant's count and head, written with the batch that moved them. A projection migrated from before has no
-- hashes for older transactions: `ledger replay` rebuilds them (docs/decisions.md).
CREATE FUNCTION ledger_projection_v9(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);
    ALTER TABLE transactions ADD COLUMN chain_index bigint, ADD COLUMN hash bytea, ADD COLUMN previous_hash bytea;
    CREATE TABLE chains (
        tenant         text PRIMARY KEY,
        count          bigint NOT NULL,
        head           bytea NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL
    );
    ALTER TABLE chains ENABLE ROW LEVEL SECURITY;
    ALTER TABLE chains FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON chains USING (tenant = public.ledger_tenant());
    GRANT SELECT ON chains TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON chains TO ledger_projector;
    PERFORM set_config('search_path', previous, true);
END
$fn$;

SELECT ledger_apply_projection_step('ledger_projection_v9');

-- A tenant's chain: its count, head and the position of its last link (no row: an empty chain).
CREATE FUNCTION api_chain(p_tenant text)
    RETURNS TABLE (count bigint, head bytea, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT c.count, c.head, c.log_partition, c.log_offset FROM chains c WHERE c.tenant = p_tenant;
END
$$;

-- A transaction's link: its hash and the previous one's (a repeat's id stands for its original).
CREATE FUNCTION api_chain_link(p_tenant text, p_id text)
    RETURNS TABLE (hash bytea, previous_hash bytea)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.hash, t.previous_hash FROM transactions t
        WHERE t.tenant = p_tenant AND t.hash IS NOT NULL
          AND t.id = coalesce((SELECT r.original_id FROM replays r WHERE r.tenant = p_tenant AND r.id = p_id), p_id);
END
$$;

REVOKE ALL ON FUNCTION api_chain(text), api_chain_link(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_chain(text), api_chain_link(text, text) TO ledger_api;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;
