-- Contract v3's events out (docs/events.md).
--
-- * `monitors` (a projection table): balance monitors, created and removed by records on the log (kinds
--   `monitor` and `unmonitor`); the fold reads an account's active ones with its policy and decides crossings.
-- * `webhooks`, `webhook_events`, `webhook_deliveries`, `webhook_attempts` (public: not derived from the log, so
--   a rebuild of the projections keeps them): endpoints a tenant registered, the events the dispatcher took
--   from the log's decisions (its id derived from the event's place in the log, so a replay adds nothing),
--   one delivery per event and endpoint, and every attempt. The dispatcher runs as `ledger_projector`; the API
--   reads and writes endpoints and reads attempts as `ledger_api`, under row-level security.
CREATE FUNCTION ledger_projection_v11(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
BEGIN
    PERFORM set_config('search_path', quote_ident(p_schema), true);
    ALTER TABLE transactions DROP CONSTRAINT transactions_kind;
    ALTER TABLE transactions ADD CONSTRAINT transactions_kind
        CHECK (kind IN ('transfer', 'hold', 'capture', 'void', 'reverse', 'policy', 'monitor', 'unmonitor')) NOT VALID;
    ALTER TABLE transactions VALIDATE CONSTRAINT transactions_kind;
    CREATE TABLE monitors (
        tenant         text NOT NULL,
        id             text NOT NULL,
        account        text NOT NULL,
        asset          text NOT NULL,
        below          bigint,
        above          bigint,
        active         boolean NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        created_at     timestamptz NOT NULL,
        removed_at     timestamptz,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX monitors_active_by_account ON monitors (tenant, account, log_offset) WHERE active;
    ALTER TABLE monitors ENABLE ROW LEVEL SECURITY;
    ALTER TABLE monitors FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON monitors USING (tenant = public.ledger_tenant());
    GRANT SELECT ON monitors TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON monitors TO ledger_projector;
    PERFORM set_config('search_path', previous, true);
END
$fn$;

SELECT ledger_apply_projection_step('ledger_projection_v11');

CREATE FUNCTION api_monitor(p_tenant text, p_id text)
    RETURNS TABLE (id text, account text, asset text, below bigint, above bigint, active boolean,
                   log_partition integer, log_offset bigint, created_at timestamptz, removed_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT m.id, m.account, m.asset, m.below, m.above, m.active, m.log_partition, m.log_offset,
                        m.created_at, m.removed_at
        FROM monitors m
        WHERE m.tenant = p_tenant
          AND m.id = coalesce((SELECT r.original_id FROM replays r WHERE r.tenant = p_tenant AND r.id = p_id), p_id);
END
$$;

-- A page of the tenant's monitors, by id after `p_after`; only the active ones unless `p_all`.
CREATE FUNCTION api_monitors(p_tenant text, p_after text, p_limit integer, p_all boolean)
    RETURNS TABLE (id text, account text, asset text, below bigint, above bigint, active boolean,
                   log_partition integer, log_offset bigint, created_at timestamptz, removed_at timestamptz)
    LANGUAGE plpgsql SET search_path = proj_v1, public AS $$
BEGIN
    PERFORM set_config('ledger.tenant', p_tenant, true);
    RETURN QUERY SELECT m.id, m.account, m.asset, m.below, m.above, m.active, m.log_partition, m.log_offset,
                        m.created_at, m.removed_at
        FROM monitors m
        WHERE m.tenant = p_tenant AND m.id > coalesce(p_after, '') AND (p_all OR m.active)
        ORDER BY m.id LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION api_monitor(text, text), api_monitors(text, text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_monitor(text, text), api_monitors(text, text, integer, boolean) TO ledger_api;

SELECT ledger_activate_projection(active_schema) FROM ledger_meta;

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
