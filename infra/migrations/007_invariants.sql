-- The database says what it guarantees, and the live projection is recorded in one place.
--
-- * CHECK constraints for the invariants the code relies on: an entry never moves 0; `committed_at` is set
--   exactly when a transaction is committed; a customer (non-system) balance never goes below zero.
-- * The live projection is `ledger_meta.active_schema`; the API's read functions carry it as their
--   search_path, set from it in the same transaction by ledger_activate_projection. The database-wide
--   default search_path that also named it (and that migrations had to undo) is gone: an operator's session
--   points itself at the live projection with `SELECT ledger_use_live()`.
-- * The advisory lock that serializes a switch against the projector's batches is named in one place.
-- * Tenants created before v2 (kept by 006 at position -1, with no record on the log) are part of every new
--   projection, so a rebuild keeps them: a fixed genesis, the same for every replay.

CREATE FUNCTION ledger_switch_lock() RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT 7215829::bigint $$;

CREATE FUNCTION ledger_invariants(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
BEGIN
    -- NOT VALID, then VALIDATE: existing rows are checked without locking out reads and writes meanwhile.
    EXECUTE format('ALTER TABLE %I.entries ADD CONSTRAINT entries_amount_not_zero CHECK (amount <> 0) NOT VALID',
                   p_schema);
    EXECUTE format('ALTER TABLE %I.transactions ADD CONSTRAINT transactions_committed_at_iff_committed '
                   'CHECK ((status = ''committed'') = (committed_at IS NOT NULL)) NOT VALID', p_schema);
    EXECUTE format('ALTER TABLE %I.balances ADD CONSTRAINT balances_customer_not_negative '
                   'CHECK (balance >= 0 OR account LIKE ''@%%'') NOT VALID', p_schema);
    EXECUTE format('ALTER TABLE %I.entries VALIDATE CONSTRAINT entries_amount_not_zero', p_schema);
    EXECUTE format('ALTER TABLE %I.transactions VALIDATE CONSTRAINT transactions_committed_at_iff_committed',
                   p_schema);
    EXECUTE format('ALTER TABLE %I.balances VALIDATE CONSTRAINT balances_customer_not_negative', p_schema);
END
$fn$;

-- A projection, as of this migration: one definition, in place of the chain 002 and 006 built.
CREATE OR REPLACE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    PERFORM ledger_create_projection_v1(p_schema);
    PERFORM ledger_projection_v2(p_schema);
    PERFORM ledger_invariants(p_schema);
    IF live IS NOT NULL AND live <> p_schema THEN
        EXECUTE format('INSERT INTO %I.tenants SELECT * FROM %I.tenants WHERE log_offset = -1', p_schema, live);
    END IF;
END
$fn$;

DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^(proj|verify)_' LOOP
        PERFORM ledger_invariants(s);
    END LOOP;
END
$$;

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

-- For operators' sessions (psql, the benchmarks): this transaction's or session's search_path, the live
-- projection first.
CREATE FUNCTION ledger_use_live() RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    PERFORM set_config('search_path', quote_ident(live) || ', public', false);
    RETURN live;
END
$$;

DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I RESET search_path', current_database());
END
$$;

GRANT EXECUTE ON FUNCTION ledger_switch_lock() TO ledger_projector;
