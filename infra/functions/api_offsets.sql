-- How far the live projection has applied the log (not tenant data: no RLS involved). The API resyncs its
-- progress from it (api/progress.py), the projector and the dispatcher their offsets.
CREATE OR REPLACE FUNCTION api_offsets()
    RETURNS TABLE (log_partition integer, next_offset bigint)
    LANGUAGE plpgsql STABLE SET search_path = proj_v1, public AS $$
BEGIN
    RETURN QUERY SELECT o.log_partition, o.next_offset FROM projection_offsets o
        WHERE o.topic = 'ledger.transactions';
END
$$;

REVOKE ALL ON FUNCTION api_offsets() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_offsets() TO ledger_api, ledger_projector;
