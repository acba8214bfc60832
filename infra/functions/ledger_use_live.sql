-- For operators' sessions (psql, the benchmarks): this transaction's or session's search_path, the live
-- projection first.
CREATE OR REPLACE FUNCTION ledger_use_live() RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    PERFORM set_config('search_path', quote_ident(live) || ', public', false);
    RETURN live;
END
$$;

REVOKE ALL ON FUNCTION ledger_use_live() FROM PUBLIC;
