-- Per-statement counters, so operators (and the benchmarks) can count round trips per request.
-- Optional: needs the library preloaded and a role allowed to create extensions.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
-- The extension's files not installed (a server without contrib), or a role not allowed to create it: go on
-- without it. Any other error is an error.
EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported THEN
    RAISE NOTICE 'pg_stat_statements not available: %', SQLERRM;
END
$$;
