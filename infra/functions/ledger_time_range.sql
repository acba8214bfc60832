-- The offset range a time range covers in a tenant's log: (low exclusive, high exclusive).
CREATE OR REPLACE FUNCTION ledger_time_range(p_tenant text, p_since timestamptz, p_until timestamptz,
                                             OUT low bigint, OUT high bigint)
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    low := -1;
    high := 9223372036854775807;
    IF p_since IS NOT NULL THEN
        low := coalesce((SELECT x.log_offset FROM transactions x WHERE x.tenant = p_tenant AND x.created_at >= p_since
                         ORDER BY x.created_at, x.log_offset LIMIT 1), high) - 1;
    END IF;
    IF p_until IS NOT NULL THEN
        high := coalesce((SELECT x.log_offset FROM transactions x WHERE x.tenant = p_tenant AND x.created_at <= p_until
                          ORDER BY x.created_at DESC, x.log_offset DESC LIMIT 1), -1) + 1;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION ledger_time_range(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_time_range(text, timestamptz, timestamptz) TO ledger_api;
