-- The projection schema, created by a function so that `ledger replay` can build a fresh one.
-- Balances are precomputed; entries carry the balance after each leg, so no read ever sums history.

CREATE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    EXECUTE format('CREATE SCHEMA %I', p_schema);
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    -- Every decided request, committed or rejected, by the id its producer gave it.
    CREATE TABLE transactions (
        tenant           text NOT NULL,
        id               text NOT NULL,
        status           text NOT NULL CHECK (status IN ('committed', 'rejected')),
        reason           text,
        postings         jsonb NOT NULL,
        metadata         jsonb NOT NULL,
        reference        text,
        idempotency_key  text,
        fingerprint      bytea NOT NULL,
        log_partition    integer NOT NULL,
        log_offset       bigint NOT NULL,
        created_at       timestamptz NOT NULL,
        committed_at     timestamptz,
        error            text,
        PRIMARY KEY (tenant, id)
    );

    CREATE TABLE balances (
        tenant         text NOT NULL,
        account        text NOT NULL,
        asset          text NOT NULL,
        balance        bigint NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        PRIMARY KEY (tenant, account, asset)
    );

    -- (log_offset, leg) orders an account's entries: a tenant lives on one partition.
    CREATE TABLE entries (
        tenant          text NOT NULL,
        account         text NOT NULL,
        asset           text NOT NULL,
        log_offset      bigint NOT NULL,
        leg             integer NOT NULL,
        transaction_id  text NOT NULL,
        amount          bigint NOT NULL,
        balance_after   bigint NOT NULL,
        committed_at    timestamptz NOT NULL,
        PRIMARY KEY (tenant, account, log_offset, leg)
    );
    CREATE INDEX entries_by_asset ON entries (tenant, account, asset, log_offset, leg);

    CREATE TABLE idempotency_keys (
        tenant          text NOT NULL,
        key             text NOT NULL,
        transaction_id  text NOT NULL,
        PRIMARY KEY (tenant, key)
    );

    -- The next offset to apply per partition, written in the same transaction as the rows it produced.
    CREATE TABLE projection_offsets (
        topic          text NOT NULL,
        log_partition  integer NOT NULL,
        next_offset    bigint NOT NULL,
        updated_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (topic, log_partition)
    );

    -- Records that could not be read as a request at all (no usable tenant or id), kept for operators.
    CREATE TABLE invalid_events (
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        record_key     bytea,
        record_value   bytea,
        error          text NOT NULL,
        logged_at      timestamptz NOT NULL,
        PRIMARY KEY (log_partition, log_offset)
    );

    ALTER TABLE transactions ENABLE ROW LEVEL SECURITY;
    ALTER TABLE transactions FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON transactions USING (tenant = public.ledger_tenant());
    ALTER TABLE balances ENABLE ROW LEVEL SECURITY;
    ALTER TABLE balances FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON balances USING (tenant = public.ledger_tenant());
    ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
    ALTER TABLE entries FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON entries USING (tenant = public.ledger_tenant());
    ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
    ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON idempotency_keys USING (tenant = public.ledger_tenant());

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO ledger_api, ledger_projector', p_schema);
    GRANT SELECT ON transactions, balances, entries, idempotency_keys, projection_offsets TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON transactions, balances, entries, idempotency_keys,
        projection_offsets, invalid_events TO ledger_projector;

    PERFORM set_config('search_path', previous, true);
END
$fn$;

-- The API's reads. One round trip each: the function sets the tenant for its own transaction only
-- (set_config(..., true)), so no tenant context survives on a pooled connection; its search_path names the
-- live projection and is switched by ledger_activate_projection.

CREATE FUNCTION api_balances(p_tenant text, p_account text)
    RETURNS TABLE (asset text, balance bigint, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT b.asset, b.balance, b.log_partition, b.log_offset
        FROM balances b WHERE b.tenant = p_tenant AND b.account = p_account;
END
$$;

CREATE FUNCTION api_balances_at(p_tenant text, p_account text, p_at timestamptz)
    RETURNS TABLE (asset text, balance bigint, log_offset bigint)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT DISTINCT ON (e.asset) e.asset, e.balance_after, e.log_offset
        FROM entries e
        WHERE e.tenant = p_tenant AND e.account = p_account AND e.committed_at <= p_at
        ORDER BY e.asset, e.log_offset DESC, e.leg DESC;
END
$$;

CREATE TYPE api_transaction_row AS (
    tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
    idempotency_key text, fingerprint bytea, log_partition integer, log_offset bigint,
    created_at timestamptz, committed_at timestamptz, error text
);

CREATE FUNCTION api_transaction(p_tenant text, p_id text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error
        FROM transactions t WHERE t.tenant = p_tenant AND t.id = p_id;
END
$$;

CREATE FUNCTION api_transaction_by_key(p_tenant text, p_key text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error
        FROM idempotency_keys k
        JOIN transactions t ON t.tenant = k.tenant AND t.id = k.transaction_id
        WHERE k.tenant = p_tenant AND k.key = p_key;
END
$$;

-- A page of history, newest first, strictly before the cursor (log_offset, leg); keyset, so its cost
-- does not depend on how deep the page is.
CREATE FUNCTION api_entries(p_tenant text, p_account text, p_asset text,
                            p_before_offset bigint, p_before_leg integer, p_limit integer)
    RETURNS TABLE (transaction_id text, asset text, amount bigint, balance_after bigint,
                   committed_at timestamptz, log_offset bigint, leg integer)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    IF p_asset IS NULL THEN
        RETURN QUERY SELECT e.transaction_id, e.asset, e.amount, e.balance_after, e.committed_at,
                            e.log_offset, e.leg
            FROM entries e
            WHERE e.tenant = p_tenant AND e.account = p_account
              AND (e.log_offset, e.leg) < (p_before_offset, p_before_leg)
            ORDER BY e.log_offset DESC, e.leg DESC
            LIMIT p_limit;
    ELSE
        RETURN QUERY SELECT e.transaction_id, e.asset, e.amount, e.balance_after, e.committed_at,
                            e.log_offset, e.leg
            FROM entries e
            WHERE e.tenant = p_tenant AND e.account = p_account AND e.asset = p_asset
              AND (e.log_offset, e.leg) < (p_before_offset, p_before_leg)
            ORDER BY e.log_offset DESC, e.leg DESC
            LIMIT p_limit;
    END IF;
END
$$;

-- How far the live projection has applied the log (not tenant data: no RLS involved).
CREATE FUNCTION api_offsets()
    RETURNS TABLE (log_partition integer, next_offset bigint)
    LANGUAGE plpgsql STABLE SET search_path = proj_v1, public AS $$
BEGIN
    RETURN QUERY SELECT o.log_partition, o.next_offset FROM projection_offsets o
        WHERE o.topic = 'ledger.transactions';
END
$$;

-- The projector calls this first in every batch: it waits while a switch is under way (the switch takes
-- the same advisory lock exclusively), then points the batch's transaction at the live projection.
CREATE FUNCTION projector_begin() RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    live text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7215829);
    SELECT active_schema INTO live FROM ledger_meta;
    PERFORM set_config('search_path', quote_ident(live) || ', public', true);
    RETURN live;
END
$$;

-- Makes `p_schema` the live projection, atomically for the API (its functions switch in one transaction)
-- and for the projector (which waits on the lock, then writes to the new schema).
CREATE FUNCTION ledger_activate_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    fn text;
BEGIN
    PERFORM pg_advisory_xact_lock(7215829);
    FOREACH fn IN ARRAY ARRAY[
        'api_balances(text, text)', 'api_balances_at(text, text, timestamptz)', 'api_transaction(text, text)',
        'api_transaction_by_key(text, text)', 'api_entries(text, text, text, bigint, integer, integer)',
        'api_offsets()'
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, public', fn, p_schema);
    END LOOP;
    INSERT INTO ledger_meta (active_schema) VALUES (p_schema)
        ON CONFLICT (singleton) DO UPDATE SET active_schema = excluded.active_schema, shadow_schema = NULL,
                                              switched_at = now();
    -- Operators' sessions (psql, `ledger verify`) see the live projection by default.
    EXECUTE format('ALTER DATABASE %I SET search_path = %I, public', current_database(), p_schema);
END
$fn$;

GRANT EXECUTE ON FUNCTION api_balances(text, text), api_balances_at(text, text, timestamptz),
    api_transaction(text, text), api_transaction_by_key(text, text),
    api_entries(text, text, text, bigint, integer, integer), api_offsets() TO ledger_api;
GRANT EXECUTE ON FUNCTION projector_begin(), api_offsets() TO ledger_projector;

SELECT ledger_create_projection('proj_v1');
SELECT ledger_activate_projection('proj_v1');
