-- Statements (contract v3): an account's opening and closing balances of a period, its debits, credits and count
-- of entries, in a constant number of indexed lookups whatever the period's length. Every entry carries its
-- account's running credit total and its number per asset (opening + credits - debits = closing). A bound is two
-- lookups: the first transaction at or after it (transactions_by_time: the log's time does not decrease along a
-- partition, and a tenant lives on one), then the account's last entry before that offset (entries_by_asset,
-- backwards).
--
-- A statement's two bounds, each as the account's last entry before it (NULL columns: none before it). `p_from`
-- NULL: before the account's first entry; `p_until` NULL: now. Returns the bound's side ('from', 'until').
CREATE OR REPLACE FUNCTION api_statement(p_tenant text, p_account text, p_asset text, p_from timestamptz,
                                         p_until timestamptz)
    RETURNS TABLE (side text, balance_after bigint, credits_total numeric, entry_number bigint,
                   first_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
DECLARE
    from_offset bigint;
    until_offset bigint;
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    IF p_from IS NULL THEN
        from_offset := -1;
    ELSE
        from_offset := coalesce((SELECT x.log_offset FROM transactions x
                                 WHERE x.tenant = p_tenant AND x.created_at >= p_from
                                 ORDER BY x.created_at, x.log_offset LIMIT 1), 9223372036854775807);
    END IF;
    IF p_until IS NULL THEN
        until_offset := 9223372036854775807;
    ELSE
        until_offset := coalesce((SELECT x.log_offset FROM transactions x
                                  WHERE x.tenant = p_tenant AND x.created_at >= p_until
                                  ORDER BY x.created_at, x.log_offset LIMIT 1), 9223372036854775807);
    END IF;
    RETURN QUERY
        SELECT 'from'::text, o.balance_after, o.credits_total, o.entry_number,
               (SELECT f.committed_at FROM entries f
                WHERE f.tenant = p_tenant AND f.account = p_account AND f.asset = p_asset
                ORDER BY f.log_offset, f.leg LIMIT 1)
        FROM (SELECT NULL) AS one
        LEFT JOIN LATERAL (SELECT e.balance_after, e.credits_total, e.entry_number FROM entries e
                           WHERE e.tenant = p_tenant AND e.account = p_account AND e.asset = p_asset
                             AND e.log_offset < from_offset
                           ORDER BY e.log_offset DESC, e.leg DESC LIMIT 1) o ON true
        UNION ALL
        SELECT 'until'::text, c.balance_after, c.credits_total, c.entry_number, NULL::timestamptz
        FROM (SELECT NULL) AS one
        LEFT JOIN LATERAL (SELECT e.balance_after, e.credits_total, e.entry_number FROM entries e
                           WHERE e.tenant = p_tenant AND e.account = p_account AND e.asset = p_asset
                             AND e.log_offset < until_offset
                           ORDER BY e.log_offset DESC, e.leg DESC LIMIT 1) c ON true;
END
$$;

REVOKE ALL ON FUNCTION api_statement(text, text, text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_statement(text, text, text, timestamptz, timestamptz) TO ledger_api;
