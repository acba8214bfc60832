-- Snapshot reads (contract v3): several accounts at one position of the log, in one statement (one MVCC
-- snapshot), with the projection's offset of the tenant's partition read in the same statement: the projector
-- commits a batch's rows and offsets together, so every balance returned is as of that offset, with no
-- transaction half in it. A row without an account is the position (the tenant's partition comes from its
-- creation record: every record of a tenant is on one partition).
CREATE OR REPLACE FUNCTION api_snapshot(p_tenant text, p_accounts text[])
    RETURNS TABLE (account text, asset text, balance bigint, held bigint, overdraft_limit bigint,
                   log_partition integer, log_offset bigint, metadata jsonb, frozen boolean, version bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY
        SELECT b.account, b.asset, b.balance, b.held, b.overdraft_limit, b.log_partition, b.log_offset,
               a.metadata, a.frozen, a.version
        FROM balances b LEFT JOIN accounts a ON a.tenant = p_tenant AND a.account = b.account
        WHERE b.tenant = p_tenant AND b.account = ANY(p_accounts)
        UNION ALL
        SELECT a.account, NULL, NULL, NULL, NULL, NULL, NULL, a.metadata, a.frozen, a.version
        FROM accounts a
        WHERE a.tenant = p_tenant AND a.account = ANY(p_accounts)
          AND NOT EXISTS (SELECT FROM balances b WHERE b.tenant = p_tenant AND b.account = a.account)
        UNION ALL
        SELECT NULL, NULL, NULL, NULL, NULL, o.log_partition, o.next_offset - 1, NULL, NULL, NULL
        FROM tenants t JOIN projection_offsets o ON o.log_partition = t.log_partition
        WHERE t.id = p_tenant AND o.topic = 'ledger.transactions';
END
$$;

REVOKE ALL ON FUNCTION api_snapshot(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_snapshot(text, text[]) TO ledger_api;
