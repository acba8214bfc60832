-- Contract v2's account policies: metadata, per-asset overdraft limits and a frozen flag, set by a record on
-- the log and applied in log order with the money requests.
--
-- * `accounts`: each account's policy as the last policy record set it.
-- * Balance rows carry their asset's `overdraft_limit` (0 unless set), written with the balance: the rule
--   "available never below -limit" is stated by the database on the row it concerns.

CREATE FUNCTION ledger_projection_v4(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    CREATE TABLE accounts (
        tenant           text NOT NULL,
        account          text NOT NULL,
        metadata         jsonb NOT NULL,
        overdraft_limit  jsonb NOT NULL,
        frozen           boolean NOT NULL,
        log_partition    integer NOT NULL,
        log_offset       bigint NOT NULL,
        updated_at       timestamptz NOT NULL,
        PRIMARY KEY (tenant, account)
    );
    ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
    ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON accounts USING (tenant = public.ledger_tenant());
    GRANT SELECT ON accounts TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON accounts TO ledger_projector;

    ALTER TABLE transactions DROP CONSTRAINT transactions_kind;
    ALTER TABLE transactions ADD CONSTRAINT transactions_kind
        CHECK (kind IN ('transfer', 'hold', 'capture', 'void', 'reverse', 'policy')) NOT VALID;
    ALTER TABLE transactions VALIDATE CONSTRAINT transactions_kind;

    ALTER TABLE balances ADD COLUMN overdraft_limit bigint NOT NULL DEFAULT 0;
    -- With an overdraft limit a customer's balance may go below zero, down to minus its limit (of available).
    ALTER TABLE balances DROP CONSTRAINT balances_customer_not_negative;
    ALTER TABLE balances DROP CONSTRAINT balances_customer_available;
    ALTER TABLE balances ADD CONSTRAINT balances_limit_not_negative CHECK (overdraft_limit >= 0) NOT VALID;
    ALTER TABLE balances ADD CONSTRAINT balances_customer_within_limit
        CHECK (account LIKE '@%' OR balance::numeric - held >= -overdraft_limit) NOT VALID;
    ALTER TABLE balances VALIDATE CONSTRAINT balances_limit_not_negative;
    ALTER TABLE balances VALIDATE CONSTRAINT balances_customer_within_limit;

    PERFORM set_config('search_path', previous, true);
END
$fn$;

CREATE OR REPLACE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    PERFORM ledger_create_projection_v1(p_schema);
    PERFORM ledger_projection_v2(p_schema);
    PERFORM ledger_invariants(p_schema);
    PERFORM ledger_projection_v3(p_schema);
    PERFORM ledger_projection_v4(p_schema);
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
        PERFORM ledger_projection_v4(s);
    END LOOP;
END
$$;

-- An account's balances with their held amounts and limits, and its policy, in one round trip (two index
-- lookups: the balance rows and the account's row).
DROP FUNCTION api_balances(text, text);
CREATE FUNCTION api_balances(p_tenant text, p_account text)
    RETURNS TABLE (asset text, balance bigint, held bigint, overdraft_limit bigint, log_partition integer,
                   log_offset bigint, metadata jsonb, frozen boolean)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT b.asset, b.balance, b.held, b.overdraft_limit, b.log_partition, b.log_offset, a.metadata,
                        a.frozen
        FROM (SELECT NULL) AS one
        LEFT JOIN balances b ON b.tenant = p_tenant AND b.account = p_account
        LEFT JOIN accounts a ON a.tenant = p_tenant AND a.account = p_account
        WHERE b.asset IS NOT NULL OR a.account IS NOT NULL;
END
$$;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;

GRANT EXECUTE ON FUNCTION api_balances(text, text) TO ledger_api;
