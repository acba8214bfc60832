-- Less written per transfer, for the same reads (issue 14; `make bench` prints WAL bytes per transfer and the
-- WAL by record type, from pg_walinspect):
--
-- * balances: fillfactor 80, room on each page for the next version of its rows, so a balance update is a
--   heap-only tuple (HOT) update instead of a new primary key entry and, in time, a page split.
-- * transactions_by_metadata: partial, over the transactions that have metadata; one without it costs the GIN
--   index nothing (it was an entry for the tenant column and a pending-list update per row). A metadata filter
--   always asks for a key and value, so it only ever matches rows with metadata.

CREATE FUNCTION ledger_projection_v6(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);
    ALTER TABLE balances SET (fillfactor = 80);
    DROP INDEX transactions_by_metadata;
    CREATE INDEX transactions_by_metadata ON transactions USING gin (tenant, metadata jsonb_path_ops)
        WHERE metadata <> '{}'::jsonb;
    PERFORM set_config('search_path', previous, true);
END
$fn$;

-- A projection is the steps up to the invariants, then every `ledger_projection_vN` from 3 on, in order; a
-- migration that changes the projection adds its step and applies it to the schemas that exist with
-- `ledger_apply_projection_step`, and this function need not be written again (006 to 010 each did).
CREATE OR REPLACE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
    step text;
BEGIN
    PERFORM ledger_create_projection_v1(p_schema);
    PERFORM ledger_projection_v2(p_schema);
    PERFORM ledger_invariants(p_schema);
    FOR step IN
        SELECT f.proname FROM pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
        WHERE n.nspname = 'public' AND f.proname ~ '^ledger_projection_v[0-9]+$'
          AND substring(f.proname FROM '[0-9]+$')::int >= 3
        ORDER BY substring(f.proname FROM '[0-9]+$')::int
    LOOP
        EXECUTE format('SELECT %I($1)', step) USING p_schema;
    END LOOP;
    IF live IS NOT NULL AND live <> p_schema THEN
        EXECUTE format('INSERT INTO %I.tenants SELECT * FROM %I.tenants WHERE log_offset = -1', p_schema, live);
    END IF;
END
$fn$;

-- One projection step applied to every projection schema there is (live, shadows, verifications).
CREATE FUNCTION ledger_apply_projection_step(p_step text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^(proj|verify)_' LOOP
        EXECUTE format('SELECT %I($1)', p_step) USING s;
    END LOOP;
END
$fn$;

SELECT ledger_apply_projection_step('ledger_projection_v6');

-- The partial index's predicate, stated, so the planner may use it.
CREATE OR REPLACE FUNCTION api_metadata_matches(p_metadata jsonb) RETURNS TABLE (id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = proj_v1, public AS $$
    SELECT x.id FROM transactions x
    WHERE x.tenant = ledger_tenant() AND x.metadata <> '{}'::jsonb AND x.metadata @> p_metadata
$$;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;

-- Left as they are, measured: entries keep three indexes (the key, by asset, by transaction). Folding
-- entries_by_transaction into the key (INCLUDE transaction_id) orders an offset's legs by leg, not by id, and
-- the planner then sorts an account's whole history for the first page of its transactions.
