-- Per-statement counters, so operators (and the benchmarks) can count round trips per request.
-- Optional: needs the library preloaded and a role allowed to create extensions.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_stat_statements not available: %', SQLERRM;
END
$$;
