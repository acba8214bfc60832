-- Contract v3's fair shares between tenants (api/limits.py):
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
