
CREATE OR REPLACE FUNCTION projector_begin() RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    live text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(ledger_switch_lock());
    SELECT active_schema INTO live FROM ledger_meta;
    PERFORM set_config('search_path', quote_ident(live) || ', public', true);
    RETURN live;
END
$$;

REVOKE ALL ON FUNCTION projector_begin() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION projector_begin() TO ledger_projector;
