-- The projections of the log, and the registry of tenants and keys.
-- Balances are precomputed; entries carry the balance after each leg, so no read ever sums history.

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
