-- Contract v2's holds and reversals.
--
-- * Every money request (transfer, hold, capture, void, reverse) is a row of `transactions`, with its `kind`
--   and the hold or transaction it acts on (`target`); a reversed transaction counts what is `reversed`.
-- * `holds`: each hold's state (held, captured, voided, expired), closed once; open holds are found by
--   partition and expiry (the projector expires them by the log's time).
-- * Balance rows carry `held` (the sum of open holds debiting them), precomputed like the balance, so a
--   balance read with holds stays one indexed lookup; available = balance - held.

CREATE FUNCTION ledger_projection_v3(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    -- Columns with a constant default are added without rewriting the table; their CHECKs are added NOT VALID,
    -- then validated (a scan that does not block reads).
    ALTER TABLE transactions ADD COLUMN kind text NOT NULL DEFAULT 'transfer', ADD COLUMN target text,
        ADD COLUMN reversed bigint NOT NULL DEFAULT 0;
    ALTER TABLE transactions ADD CONSTRAINT transactions_kind
        CHECK (kind IN ('transfer', 'hold', 'capture', 'void', 'reverse')) NOT VALID;
    ALTER TABLE transactions ADD CONSTRAINT transactions_reversed_not_negative CHECK (reversed >= 0) NOT VALID;
    ALTER TABLE transactions VALIDATE CONSTRAINT transactions_kind;
    ALTER TABLE transactions VALIDATE CONSTRAINT transactions_reversed_not_negative;
    ALTER TABLE balances ADD COLUMN held bigint NOT NULL DEFAULT 0;
    ALTER TABLE balances ADD CONSTRAINT balances_held_not_negative CHECK (held >= 0) NOT VALID;
    ALTER TABLE balances ADD CONSTRAINT balances_customer_available
        CHECK (balance >= held OR account LIKE '@%') NOT VALID;
    ALTER TABLE balances VALIDATE CONSTRAINT balances_held_not_negative;
    ALTER TABLE balances VALIDATE CONSTRAINT balances_customer_available;

    CREATE TABLE holds (
        tenant         text NOT NULL,
        id             text NOT NULL,
        state          text NOT NULL CHECK (state IN ('held', 'captured', 'voided', 'expired')),
        postings       jsonb NOT NULL,
        expires_at     timestamptz NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        created_at     timestamptz NOT NULL,
        closed_by      text,
        closed_at      timestamptz,
        PRIMARY KEY (tenant, id),
        CHECK ((state = 'held') = (closed_at IS NULL))
    );
    -- The projector's question each batch: which open holds of these partitions are due by now.
    CREATE INDEX holds_open_by_expiry ON holds (log_partition, expires_at) WHERE state = 'held';
    ALTER TABLE holds ENABLE ROW LEVEL SECURITY;
    ALTER TABLE holds FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON holds USING (tenant = public.ledger_tenant());
    GRANT SELECT ON holds TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON holds TO ledger_projector;

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
        PERFORM ledger_projection_v3(s);
    END LOOP;
END
$$;

DROP FUNCTION api_balances(text, text);
CREATE FUNCTION api_balances(p_tenant text, p_account text)
    RETURNS TABLE (asset text, balance bigint, held bigint, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT b.asset, b.balance, b.held, b.log_partition, b.log_offset
        FROM balances b WHERE b.tenant = p_tenant AND b.account = p_account;
END
$$;

DROP FUNCTION api_transaction(text, text);
DROP FUNCTION api_transaction_by_key(text, text);
DROP TYPE api_transaction_row;
CREATE TYPE api_transaction_row AS (
    tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
    idempotency_key text, fingerprint bytea, log_partition integer, log_offset bigint,
    created_at timestamptz, committed_at timestamptz, error text, replay_of text,
    kind text, target text, reversed bigint
);

CREATE FUNCTION api_transaction(p_tenant text, p_id text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error,
                        NULL::text, t.kind, t.target, t.reversed
        FROM transactions t WHERE t.tenant = p_tenant AND t.id = p_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT t.tenant, r.id, t.status, t.reason, t.postings, t.metadata, t.reference,
                            t.idempotency_key, t.fingerprint, t.log_partition, t.log_offset, t.created_at,
                            t.committed_at, t.error, t.id, t.kind, t.target, t.reversed
            FROM replays r JOIN transactions t ON t.tenant = r.tenant AND t.id = r.original_id
            WHERE r.tenant = p_tenant AND r.id = p_id;
    END IF;
END
$$;

CREATE FUNCTION api_transaction_by_key(p_tenant text, p_key text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error,
                        NULL::text, t.kind, t.target, t.reversed
        FROM idempotency_keys k
        JOIN transactions t ON t.tenant = k.tenant AND t.id = k.transaction_id
        WHERE k.tenant = p_tenant AND k.key = p_key;
END
$$;

-- A hold: its request (postings, metadata, the rejection reason if any) and its state, in one round trip; by
-- its own id, or by the id of a repeat of its request (handed out too), which stands for it.
CREATE FUNCTION api_hold(p_tenant text, p_id text)
    RETURNS TABLE (id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
                   expires_at timestamptz, closed_by text, closed_at timestamptz, log_partition integer,
                   log_offset bigint, created_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.id, coalesce(h.state, t.status), t.reason, t.postings, t.metadata, t.reference,
                        h.expires_at, h.closed_by, h.closed_at, t.log_partition, t.log_offset, t.created_at
        FROM transactions t LEFT JOIN holds h ON h.tenant = t.tenant AND h.id = t.id
        WHERE t.tenant = p_tenant AND t.kind = 'hold'
          AND t.id = coalesce((SELECT r.original_id FROM replays r WHERE r.tenant = p_tenant AND r.id = p_id), p_id);
END
$$;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;

GRANT EXECUTE ON FUNCTION api_balances(text, text), api_transaction(text, text),
    api_transaction_by_key(text, text), api_hold(text, text) TO ledger_api;
