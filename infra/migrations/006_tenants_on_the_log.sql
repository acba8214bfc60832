-- Contract v2: tenants are on the log, every id resolves, and a batch knows which projection it was folded on.
--
-- * `tenants` moves into the projection: a tenant exists from its creation record on the log, so a replay
--   decides every later request alike (`unknown_tenant` before it). The registry keeps only keys.
-- * `replays`: a request that repeated an idempotency key under an id of its own; that id resolves to the
--   original transaction, forever.
-- * `projector_open_batch` also returns the projection it opened, so a batch folded on one projection's
--   state is never written into another after a switch.

-- The tables a projection gained in v2, for new projections and for those that exist already.
CREATE FUNCTION ledger_projection_v2(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    -- Tenants as the log created them (not tenant data: every API instance loads the list).
    CREATE TABLE tenants (
        id             text PRIMARY KEY,
        name           text NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        created_at     timestamptz NOT NULL
    );

    CREATE TABLE replays (
        tenant         text NOT NULL,
        id             text NOT NULL,
        original_id    text NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    ALTER TABLE replays ENABLE ROW LEVEL SECURITY;
    ALTER TABLE replays FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON replays USING (tenant = public.ledger_tenant());

    GRANT SELECT ON tenants, replays TO ledger_api;
    GRANT SELECT, INSERT ON tenants, replays TO ledger_projector;

    PERFORM set_config('search_path', previous, true);
END
$fn$;

ALTER FUNCTION ledger_create_projection(text) RENAME TO ledger_create_projection_v1;

CREATE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM ledger_create_projection_v1(p_schema);
    PERFORM ledger_projection_v2(p_schema);
END
$fn$;

DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^(proj|verify)_' LOOP
        PERFORM ledger_projection_v2(s);
    END LOOP;
END
$$;

-- Tenants created before v2 have no record on the log: they are kept (position -1) so a running local stack
-- goes on working, but a replay does not know them; `make clean-data` starts afresh (README).
DO $$
DECLARE
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    EXECUTE format('INSERT INTO %I.tenants (id, name, log_partition, log_offset, created_at) '
                   'SELECT id, name, -1, -1, created_at FROM public.tenants ON CONFLICT DO NOTHING', live);
END
$$;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_tenant_fkey;
DROP TABLE public.tenants;

-- The API's reads of the new tables (their search_path is repointed by ledger_activate_projection).
CREATE FUNCTION api_tenants(p_id text DEFAULT NULL)
    RETURNS TABLE (id text, name text, log_partition integer, log_offset bigint)
    LANGUAGE plpgsql STABLE SET search_path = proj_v1, public AS $$
BEGIN
    RETURN QUERY SELECT t.id, t.name, t.log_partition, t.log_offset FROM tenants t
        WHERE p_id IS NULL OR t.id = p_id;
END
$$;

-- A transaction by id: a decided request, or a repeat of one (`replay_of` names the original, whose
-- decision, postings and position it shows).
DROP FUNCTION api_transaction(text, text);
DROP FUNCTION api_transaction_by_key(text, text);
DROP TYPE api_transaction_row;
CREATE TYPE api_transaction_row AS (
    tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
    idempotency_key text, fingerprint bytea, log_partition integer, log_offset bigint,
    created_at timestamptz, committed_at timestamptz, error text, replay_of text
);

CREATE FUNCTION api_transaction(p_tenant text, p_id text)
    RETURNS SETOF api_transaction_row
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT t.tenant, t.id, t.status, t.reason, t.postings, t.metadata, t.reference, t.idempotency_key,
                        t.fingerprint, t.log_partition, t.log_offset, t.created_at, t.committed_at, t.error,
                        NULL::text
        FROM transactions t WHERE t.tenant = p_tenant AND t.id = p_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT t.tenant, r.id, t.status, t.reason, t.postings, t.metadata, t.reference,
                            t.idempotency_key, t.fingerprint, t.log_partition, t.log_offset, t.created_at,
                            t.committed_at, t.error, t.id
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
                        NULL::text
        FROM idempotency_keys k
        JOIN transactions t ON t.tenant = k.tenant AND t.id = k.transaction_id
        WHERE k.tenant = p_tenant AND k.key = p_key;
END
$$;

-- Every `api_*` function reads the live projection: repoint them all, not a list that must be kept in step.
CREATE OR REPLACE FUNCTION ledger_activate_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    fn regprocedure;
BEGIN
    PERFORM pg_advisory_xact_lock(7215829);
    FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'public' AND p.proname LIKE 'api\_%' LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, public', fn, p_schema);
    END LOOP;
    INSERT INTO ledger_meta (active_schema) VALUES (p_schema)
        ON CONFLICT (singleton) DO UPDATE SET active_schema = excluded.active_schema, shadow_schema = NULL,
                                              switched_at = now();
    -- Operators' sessions (psql, `ledger verify`) see the live projection by default.
    EXECUTE format('ALTER DATABASE %I SET search_path = %I, public', current_database(), p_schema);
END
$fn$;

-- Open a batch: as projector_begin_batch, and say which projection the transaction points at.
CREATE FUNCTION projector_open_batch(p_topic text, p_partitions integer[], p_schema text DEFAULT NULL)
    RETURNS TABLE (log_partition integer, next_offset bigint, projection text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    target text := p_schema;
BEGIN
    IF target IS NULL THEN
        target := projector_begin();
    ELSE
        PERFORM set_config('search_path', quote_ident(target) || ', public', true);
    END IF;
    INSERT INTO projection_offsets (topic, log_partition, next_offset)
        SELECT p_topic, p, 0 FROM unnest(p_partitions) AS p
        ON CONFLICT (topic, log_partition) DO NOTHING;
    RETURN QUERY SELECT o.log_partition, o.next_offset, target FROM projection_offsets o
        WHERE o.topic = p_topic AND o.log_partition = ANY (p_partitions)
        ORDER BY o.log_partition FOR UPDATE;
END
$$;
DROP FUNCTION projector_begin_batch(text, integer[], text);

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;

GRANT EXECUTE ON FUNCTION api_tenants(text), api_transaction(text, text), api_transaction_by_key(text, text)
    TO ledger_api;
GRANT EXECUTE ON FUNCTION projector_open_batch(text, integer[], text) TO ledger_projector;
