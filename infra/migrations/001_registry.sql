-- The registry (tenants, keys), the roles, and which projection schema is live.
--
-- Projections (balances, entries, transactions, ...) live in a schema of their own, `proj_*`, so that an
-- operator can rebuild them from the log into a fresh schema while the live one keeps serving, then
-- switch atomically (`ledger replay`). `ledger_meta.active_schema` names the live one.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_api') THEN
        CREATE ROLE ledger_api LOGIN NOBYPASSRLS;
    END IF;
    -- The projector writes every tenant's rows in set-based batches, so it bypasses row-level security.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_projector') THEN
        CREATE ROLE ledger_projector LOGIN BYPASSRLS;
    END IF;
END
$$;

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id             text PRIMARY KEY,
    tenant         text NOT NULL REFERENCES tenants (id),
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
GRANT SELECT, INSERT, UPDATE ON tenants, api_keys TO ledger_api;
GRANT SELECT ON ledger_meta TO ledger_api, ledger_projector;
GRANT SELECT ON tenants TO ledger_projector;

-- The tenant a statement may see; unset (NULL) sees nothing.
CREATE FUNCTION ledger_tenant() RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('ledger.tenant', true), '') $$;
GRANT EXECUTE ON FUNCTION ledger_tenant() TO ledger_api, ledger_projector;
