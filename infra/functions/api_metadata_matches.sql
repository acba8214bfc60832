-- The ids of the current tenant's transactions whose metadata contains p_metadata, from the GIN index. Row-level
-- security would keep the index from serving the filter (containment is not a leakproof operator, so it may not
-- run below the policy), so this reads as the owner, limited to the tenant the calling read function set
-- (ledger_tenant()): it sees no more than the caller may. Named api_* so a switch of projection repoints it.
-- The partial index's predicate (metadata <> '{}') is stated, so the planner may use it.
--
-- A LANGUAGE sql body is checked against the catalog when it is created, under the function's own search_path,
-- and `proj_v1` does not exist yet when a fresh database gets its functions (nor once a replay has replaced
-- it): the check is off for this file's transaction only; the body is checked when called.
SET LOCAL check_function_bodies = off;
CREATE OR REPLACE FUNCTION api_metadata_matches(p_metadata jsonb) RETURNS TABLE (id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = proj_v1, public AS $$
    SELECT x.id FROM transactions x
    WHERE x.tenant = ledger_tenant() AND x.metadata <> '{}'::jsonb AND x.metadata @> p_metadata
$$;

REVOKE ALL ON FUNCTION api_metadata_matches(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_metadata_matches(jsonb) TO ledger_api;
