-- The SQL of a page of transactions for the filters given (NULL: not filtered), parameters $1..$9 in the order
-- of api_transactions': tenant, account, reference, status, metadata, low offset (exclusive), before offset,
-- before id, limit. Only the conditions asked for are in it, so the planner picks the index that suits them.
-- Every shape is built here, so the EXPLAIN test (tests/integration/test_query_plans.py) checks the very SQL the
-- API runs.
CREATE OR REPLACE FUNCTION ledger_transactions_query(p_account boolean, p_reference boolean, p_status boolean,
                                                     p_metadata boolean) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    filters text := '';
BEGIN
    IF p_reference THEN filters := filters || ' AND t.reference = $3'; END IF;
    IF p_status THEN filters := filters || ' AND t.status = $4'; END IF;
    IF p_metadata THEN filters := filters || ' AND t.metadata @> $5'; END IF;
    IF p_account THEN
        RETURN 'SELECT t.* FROM (SELECT DISTINCT e.log_offset, e.transaction_id FROM entries e'
            || ' WHERE e.tenant = $1 AND e.account = $2 AND e.log_offset > $6'
            || ' AND (e.log_offset, e.transaction_id) < ($7, $8)'
            || ' ORDER BY e.log_offset DESC, e.transaction_id DESC) m'
            || ' JOIN transactions t ON t.tenant = $1 AND t.id = m.transaction_id WHERE true' || filters
            || ' ORDER BY m.log_offset DESC, m.transaction_id DESC LIMIT $9';
    END IF;
    IF p_metadata THEN
        -- The matches come from the GIN index, then are ordered: without the fence (OFFSET 0), a guess that
        -- matches are common has the planner walk the tenant's whole history by position looking for them.
        RETURN 'SELECT t.* FROM api_metadata_matches($5) m JOIN transactions t ON t.tenant = $1 AND t.id = m.id'
            || ' WHERE t.log_offset > $6 AND (t.log_offset, t.id) < ($7, $8)'
            || replace(filters, ' AND t.metadata @> $5', '') || ' ORDER BY t.log_offset DESC, t.id DESC LIMIT $9';
    END IF;
    RETURN 'SELECT t.* FROM transactions t WHERE t.tenant = $1 AND t.log_offset > $6'
        || ' AND (t.log_offset, t.id) < ($7, $8)' || filters || ' ORDER BY t.log_offset DESC, t.id DESC LIMIT $9';
END
$$;

REVOKE ALL ON FUNCTION ledger_transactions_query(boolean, boolean, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_transactions_query(boolean, boolean, boolean, boolean) TO ledger_api;
