-- The baseline: what migrations 001 to 021 left in a database outside the projection schemas (the roles, the
-- extensions, the registry and webhook tables, grants, row-level security, default privileges), as of 021, in
-- one file. A database migrated by 001..021 has all of this already: the migrator records this migration as
-- applied without running it (infra/migrate.py). The functions are not here but in infra/functions/, one file
-- each, applied after the versioned migrations whenever a file changes; so is ledger_create_projection, which
-- builds a projection schema (`proj_*`, `verify_*`). The first projection, `proj_v1`, is created and made live by
-- the migrator once the functions exist.

-- The roles. The projector writes every tenant's rows in set-based batches, so it bypasses row-level security.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_api') THEN
        CREATE ROLE ledger_api LOGIN NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_projector') THEN
        CREATE ROLE ledger_projector LOGIN BYPASSRLS;
    END IF;
END
$$;

-- Per-statement counters, so operators (and the benchmarks) can count round trips per request. Optional: needs
-- the library preloaded and a role allowed to create extensions.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
-- The extension's files not installed (a server without contrib), or a role not allowed to create it: go on
-- without it. Any other error is an error.
EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported THEN
    RAISE NOTICE 'pg_stat_statements not available: %', SQLERRM;
END
$$;

-- Only the roles that call a function may execute it. PostgreSQL grants EXECUTE on every new function to PUBLIC:
-- take that away, for the functions that exist (pg_stat_statements' live in public too: only the owner reads them,
-- for the benchmarks) and for those created later by the role that runs the migrations (the global form of ALTER
-- DEFAULT PRIVILEGES: a per-schema default can only add privileges, never remove PUBLIC's). Each function's file
-- grants each role exactly what it calls; the owner (migrations, `ledger` operator commands) keeps all.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The registry: API keys (tenants are on the log, in the projection: `tenants`), and which projection schema is
-- live. `ledger_meta.active_schema` names the live one (`shadow_schema`, a rebuild under way); the API's read
-- functions carry it as their search_path, set from it in the same transaction by ledger_activate_projection.
CREATE TABLE api_keys (
    id             text PRIMARY KEY,
    tenant         text NOT NULL,
    secret_sha256  bytea NOT NULL,
    scopes         text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

CREATE TABLE ledger_meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    active_schema  text NOT NULL,
    shadow_schema  text,
    switched_at    timestamptz NOT NULL DEFAULT now()
);

GRANT USAGE ON SCHEMA public TO ledger_api, ledger_projector;
GRANT SELECT, INSERT, UPDATE ON api_keys TO ledger_api;
GRANT SELECT ON ledger_meta TO ledger_api, ledger_projector;

-- The tenant a statement may see; unset (NULL) sees nothing. Every row-level security policy calls it, with the
-- privileges of the querying role, so it must exist before the policies that name it (the webhooks' below, every
-- projection's): it is defined here, once, the one function that is not a file of infra/functions/ (those are
-- applied after the versioned migrations). Changing it takes a versioned migration (CREATE OR REPLACE), which
-- tests/unit/test_sql_functions.py must then allow as its second definition. The projector bypasses row-level
-- security, so the policies never evaluate it for that role, which may not execute it.
CREATE FUNCTION ledger_tenant() RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('ledger.tenant', true), '') $$;
GRANT EXECUTE ON FUNCTION ledger_tenant() TO ledger_api;

-- GIN over (tenant, metadata) in the projections: btree_gin lets the tenant lead the index, so a metadata filter
-- reads one tenant's matches only, and the planner sees both conditions served by one index.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- The API's type for a transaction, as api_transaction and api_transaction_by_key return it (`replay_of` names
-- the original of a repeat). A function file cannot change it while functions return it: a change is a versioned
-- migration that drops those functions and the type, creates the type, then their files are applied again.
CREATE TYPE api_transaction_row AS (
    tenant text, id text, status text, reason text, postings jsonb, metadata jsonb, reference text,
    idempotency_key text, fingerprint bytea, log_partition integer, log_offset bigint,
    created_at timestamptz, committed_at timestamptz, error text, replay_of text,
    kind text, target text, reversed bigint
);

-- Fair shares between tenants (api/limits.py, contract v3):
--
-- * `tenant_limits`: the limits an operator set for a tenant (`PUT /v1/tenants/{t}/limits`); a tenant without
--   a row has the environment's defaults. A change is announced on `ledger_keys` as `limits:<tenant>`, so every
--   API process applies it within a second.
-- * `api_processes`: every API process's heartbeat, once a second; each enforces 1/n of every limit, n the
--   processes heard within the last 3 s, so two processes do not give a tenant twice its limit.
CREATE TABLE tenant_limits (
    tenant        text PRIMARY KEY,
    writes_per_s  integer NOT NULL CHECK (writes_per_s >= 1),
    reads_per_s   integer NOT NULL CHECK (reads_per_s >= 1),
    burst_s       integer NOT NULL CHECK (burst_s >= 1),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_processes (
    id        text PRIMARY KEY,
    seen_at   timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_limits, api_processes TO ledger_api;

-- Events out (docs/events.md). `webhooks`, `webhook_events`, `webhook_deliveries`, `webhook_attempts` are in
-- public: not derived from the log, so a rebuild of the projections keeps them. Endpoints a tenant registered, the
-- events the dispatcher took from the log's decisions (its id derived from the event's place in the log, so a
-- replay adds nothing), one delivery per event and endpoint, and every attempt. The dispatcher runs as
-- `ledger_projector`; the API reads and writes endpoints and reads attempts as `ledger_api`, under row-level
-- security.
--
-- `changed_at` moves on every registration and deletion (the dispatchers reload their endpoints when its maximum
-- does); an endpoint's URL is registered once per tenant (16 endpoints on one URL would multiply its traffic).
CREATE TABLE webhooks (
    tenant      text NOT NULL,
    id          text NOT NULL,
    url         text NOT NULL CHECK (length(url) <= 2048),
    events      text[] NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at  timestamptz,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX webhooks_one_per_url ON webhooks (tenant, url) WHERE deleted_at IS NULL;
CREATE INDEX webhooks_by_change ON webhooks (changed_at);
-- Every event the dispatcher took from the log for some endpoint: `id` is derived from its place in the log;
-- `body` is what every attempt sends (built once, so a retry's signature covers the same bytes).
CREATE TABLE webhook_events (
    id            text PRIMARY KEY,
    tenant        text NOT NULL,
    type          text NOT NULL,
    subject       text NOT NULL,  -- the transaction or hold the event is about
    position      text NOT NULL,  -- the tenant's token of the event's place in the log
    occurred_at   timestamptz NOT NULL,  -- when the decision was published
    crossing      jsonb,  -- a balance.crossed event's data
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- One per event and endpoint. A pending delivery is leased (`leased_by`, until `next_at`) by the dispatcher
-- process that will attempt it; another claims it only once the lease ran out, and every change after an
-- attempt is made only by the lease's holder.
CREATE TABLE webhook_deliveries (
    event_id      text NOT NULL REFERENCES webhook_events (id),
    webhook_id    text NOT NULL,
    tenant        text NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts      integer NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL,
    leased_by     text,
    give_up_at    timestamptz NOT NULL,
    delivered_at  timestamptz,
    PRIMARY KEY (event_id, webhook_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (tenant, webhook_id, next_at) WHERE state = 'pending';
CREATE TABLE webhook_attempts (
    tenant       text NOT NULL,
    webhook_id   text NOT NULL,
    event_id     text NOT NULL,
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, webhook_id, at, event_id, attempt)
);

ALTER TABLE webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhooks USING (tenant = ledger_tenant()) WITH CHECK (tenant = ledger_tenant());
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_attempts USING (tenant = ledger_tenant());
ALTER TABLE webhook_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_events USING (tenant = ledger_tenant());
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries USING (tenant = ledger_tenant());

-- The API never reads a secret back (it shows the one it made, once) and never touches a delivery.
GRANT SELECT (tenant, id, url, events, created_at, deleted_at, changed_at), INSERT, UPDATE (deleted_at, changed_at)
    ON webhooks TO ledger_api;
GRANT SELECT ON webhook_attempts, webhook_events TO ledger_api;
GRANT SELECT ON webhooks TO ledger_projector;
GRANT SELECT, INSERT, UPDATE ON webhook_events, webhook_deliveries TO ledger_projector;
GRANT SELECT, INSERT, DELETE ON webhook_attempts TO ledger_projector;
