-- Makes `p_schema` the live projection, atomically for the API (its functions switch in one transaction) and for
-- the projector (which waits on the lock, then writes to the new schema). Every `api_*` function reads the live
-- projection: it repoints them all, not a list that must be kept in step. The database's default search_path is
-- left alone: an operator's session points itself at the live projection with `SELECT ledger_use_live()`.
-- Only the owner may run it (migrations, `ledger replay`).
CREATE OR REPLACE FUNCTION ledger_activate_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    fn regprocedure;
BEGIN
    PERFORM pg_advisory_xact_lock(ledger_switch_lock());
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.proname LIKE 'api\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, public', fn, p_schema);
    END LOOP;
    INSERT INTO ledger_meta (active_schema) VALUES (p_schema)
        ON CONFLICT (singleton) DO UPDATE SET active_schema = excluded.active_schema, shadow_schema = NULL,
                                              switched_at = now();
END
$fn$;

REVOKE ALL ON FUNCTION ledger_activate_projection(text) FROM PUBLIC;
