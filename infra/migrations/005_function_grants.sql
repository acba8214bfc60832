-- Only the roles that call a function may execute it.
--
-- PostgreSQL grants EXECUTE on every new function to PUBLIC, so the GRANTs of 001, 002 and 004 restricted
-- nothing: `ledger_api` could call `ledger_activate_projection` (repoint the live projection),
-- `ledger_create_projection` or `projector_begin_batch`. Take that away, for the functions that exist and for
-- those later migrations create (the global form of ALTER DEFAULT PRIVILEGES: a per-schema default can only
-- add privileges, never remove PUBLIC's; it covers functions created by the role that runs the migrations),
-- then grant each role exactly what it calls. The owner (migrations, `ledger` operator commands) keeps all.
-- pg_stat_statements' functions live in public too: only the owner reads them (the benchmarks).

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The API: its reads (api/store.py), the progress it resyncs from (api/progress.py), and ledger_tenant(),
-- which the row-level security policies of every tenant table call with the privileges of the querying role.
GRANT EXECUTE ON FUNCTION
    api_balances(text, text),
    api_balances_at(text, text, timestamptz),
    api_transaction(text, text),
    api_transaction_by_key(text, text),
    api_entries(text, text, text, bigint, integer, integer),
    api_offsets(),
    ledger_tenant()
    TO ledger_api;

-- The projector: opening a batch (projections/writer.py calls both; projector_begin_batch calls
-- projector_begin, as the projector), and its resync of offsets (projections/app.py calls api_offsets).
-- It bypasses row-level security, so the policies' ledger_tenant() is never evaluated for it.
GRANT EXECUTE ON FUNCTION
    projector_begin_batch(text, integer[], text),
    projector_begin(),
    api_offsets()
    TO ledger_projector;
REVOKE EXECUTE ON FUNCTION ledger_tenant() FROM ledger_projector;
