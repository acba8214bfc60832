-- A projection schema, empty, as of now: every table with its columns, constraints, indexes, row-level security
-- and grants. Projections (balances, entries, transactions, ...) live in a schema of their own, `proj_*`, so that
-- an operator can rebuild them from the log into a fresh schema while the live one keeps serving, then switch
-- atomically (`ledger replay`; `ledger verify` builds a `verify_*` one). Balances are precomputed; entries carry
-- the balance after each leg, so no read ever sums history.
--
-- This builds new schemas only. A change to the projection is made twice: here, for the schemas created from now
-- on, and in a new versioned migration (infra/migrations/) that ALTERs every schema that exists
-- (`nspname ~ '^(proj|verify)_'`), with any backfill of their rows; the two must leave the same schema (column
-- order included: a column added by ALTER goes last, so add it last here too). See infra/functions/README.md.
--
-- Tenants created before contract v2 have no record on the log: the databases that had them keep them in the live
-- projection at position -1, and every new projection copies them, so a rebuild keeps them (a fixed genesis, the
-- same for every replay).
CREATE OR REPLACE FUNCTION ledger_create_projection(p_schema text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    previous text := current_setting('search_path');
    live text := (SELECT active_schema FROM ledger_meta);
BEGIN
    EXECUTE format('CREATE SCHEMA %I', p_schema);
    PERFORM set_config('search_path', quote_ident(p_schema), true);

    -- Every decided request, committed or rejected, by the id its producer gave it: a money request (transfer,
    -- hold, capture, void, reverse), a policy or monitor record, with the hold or transaction it acts on
    -- (`target`); a reversed transaction counts what is `reversed`. A committed transfer, capture or reversal
    -- stores its place in its tenant's tamper-evident chain, its hash and the previous one's (ledger/chain.py).
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
        kind             text NOT NULL DEFAULT 'transfer',
        target           text,
        reversed         bigint NOT NULL DEFAULT 0,
        chain_index      bigint,
        hash             bytea,
        previous_hash    bytea,
        PRIMARY KEY (tenant, id),
        CONSTRAINT transactions_committed_at_iff_committed CHECK ((status = 'committed') = (committed_at IS NOT NULL)),
        CONSTRAINT transactions_kind
            CHECK (kind IN ('transfer', 'hold', 'capture', 'void', 'reverse', 'policy', 'monitor', 'unmonitor')),
        CONSTRAINT transactions_reversed_not_negative CHECK (reversed >= 0)
    );

    -- Balances carry `held` (the sum of open holds debiting them), precomputed like the balance, so a balance read
    -- with holds stays one indexed lookup (available = balance - held), and their asset's `overdraft_limit` (0
    -- unless set), so the rule "available never below -limit" is stated by the database on the row it concerns
    -- (a system account, `@...`, has no such rule). `credits_total` and `entries_count` are the account's as of
    -- its latest entry, for the projector to go on from. Fillfactor 80 leaves room on each page for the next
    -- version of its rows, so a balance update is a heap-only tuple (HOT) update instead of a new primary key
    -- entry and, in time, a page split.
    CREATE TABLE balances (
        tenant           text NOT NULL,
        account          text NOT NULL,
        asset            text NOT NULL,
        balance          bigint NOT NULL,
        log_partition    integer NOT NULL,
        log_offset       bigint NOT NULL,
        held             bigint NOT NULL DEFAULT 0,
        overdraft_limit  bigint NOT NULL DEFAULT 0,
        credits_total    numeric NOT NULL DEFAULT 0,
        entries_count    bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, account, asset),
        CONSTRAINT balances_held_not_negative CHECK (held >= 0),
        CONSTRAINT balances_limit_not_negative CHECK (overdraft_limit >= 0),
        CONSTRAINT balances_customer_within_limit
            CHECK (account LIKE '@%' OR balance::numeric - held >= -overdraft_limit)
    ) WITH (fillfactor = 80);

    -- (log_offset, leg) orders an account's entries: a tenant lives on one partition. Every entry carries its
    -- account's running credit total and its number, per asset, for statements (api_statement): `numeric`, since
    -- a credit total grows for ever and may pass int64.
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
        credits_total   numeric NOT NULL,
        entry_number    bigint NOT NULL,
        PRIMARY KEY (tenant, account, log_offset, leg),
        CONSTRAINT entries_amount_not_zero CHECK (amount <> 0)
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

    -- Tenants as the log created them (not tenant data: every API instance loads the list). A tenant exists from
    -- its creation record on the log, so a replay decides every later request alike (`unknown_tenant` before it).
    CREATE TABLE tenants (
        id             text PRIMARY KEY,
        name           text NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL,
        created_at     timestamptz NOT NULL
    );

    -- A request that repeated an idempotency key under an id of its own: that id resolves to the original
    -- transaction, forever.
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

    -- Each hold's state (held, captured, voided, expired), closed once.
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
    -- The projector's question each batch: which open holds of these partitions are due by now (it expires them
    -- by the log's time).
    CREATE INDEX holds_open_by_expiry ON holds (log_partition, expires_at) WHERE state = 'held';
    ALTER TABLE holds ENABLE ROW LEVEL SECURITY;
    ALTER TABLE holds FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON holds USING (tenant = public.ledger_tenant());
    GRANT SELECT ON holds TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON holds TO ledger_projector;

    -- Each account's policy as the last policy record set it (metadata, per-asset overdraft limits, frozen), and
    -- its `version`: the count of committed records that changed the account (a transaction or hold naming it, a
    -- capture, void or expiry of a hold naming it, a policy update), for the conditions on a write. An account
    -- with no policy has a row with the empty policy; the position and `updated_at` are the last record that
    -- changed it.
    CREATE TABLE accounts (
        tenant           text NOT NULL,
        account          text NOT NULL,
        metadata         jsonb NOT NULL,
        overdraft_limit  jsonb NOT NULL,
        frozen           boolean NOT NULL,
        log_partition    integer NOT NULL,
        log_offset       bigint NOT NULL,
        updated_at       timestamptz NOT NULL,
        version          bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, account),
        CONSTRAINT accounts_version_not_negative CHECK (version >= 0)
    );
    ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
    ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON accounts USING (tenant = public.ledger_tenant());
    GRANT SELECT ON accounts TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON accounts TO ledger_projector;

    -- The queries of contract v2, each served by an index: a page costs what its rows cost, whatever the tenant's
    -- size. Transactions come newest first by their place in the log, keyset on (log_offset, id) (a tenant lives
    -- on one partition, and the items of an atomic batch share their record's offset); by reference and by status,
    -- btree indexes that end in the keyset; by time, created_at is the record's broker time (LogAppendTime,
    -- non-decreasing along a partition), so a time range becomes an offset range, by two lookups; by account,
    -- through entries, on (tenant, account, log_offset, transaction_id), which every committed movement has.
    CREATE INDEX transactions_by_position ON transactions (tenant, log_offset, id);
    CREATE INDEX transactions_by_reference ON transactions (tenant, reference, log_offset, id)
        WHERE reference IS NOT NULL;
    CREATE INDEX transactions_by_status ON transactions (tenant, status, log_offset, id);
    CREATE INDEX transactions_by_time ON transactions (tenant, created_at, log_offset);
    -- By metadata key and value: GIN with jsonb_path_ops, for containment (`metadata @> {"k": "v"}`), one index
    -- for every key at about a third of the default jsonb_ops' size; btree_gin lets the tenant lead it, so a
    -- filter reads one tenant's matches only. Partial, over the transactions that have metadata: one without it
    -- costs the index nothing, and a filter always asks for a key and value, so it only ever matches rows with
    -- metadata (api_metadata_matches states the predicate).
    CREATE INDEX transactions_by_metadata ON transactions USING gin (tenant, metadata jsonb_path_ops)
        WHERE metadata <> '{}'::jsonb;
    -- Entries keep three indexes (the key, by asset, by transaction), measured: folding entries_by_transaction
    -- into the key (INCLUDE transaction_id) orders an offset's legs by leg, not by id, and the planner then sorts
    -- an account's whole history for the first page of its transactions.
    CREATE INDEX entries_by_transaction ON entries (tenant, account, log_offset, transaction_id);

    -- A batch posted with an `Idempotency-Key` binds the key whole (contract v3): the batch's fingerprint, its
    -- decision and its items' ids in order, so that a repeat replays each item. A key is bound by a row here or by
    -- one of `idempotency_keys`, never both (the fold keeps one map of keys).
    CREATE TABLE batches (
        tenant           text NOT NULL,
        id               text NOT NULL,
        idempotency_key  text NOT NULL,
        fingerprint      bytea NOT NULL,
        status           text NOT NULL CHECK (status IN ('committed', 'rejected')),
        reason           text,
        atomic           boolean NOT NULL,
        items            text[] NOT NULL,
        log_partition    integer NOT NULL,
        log_offset       bigint NOT NULL,
        created_at       timestamptz NOT NULL,
        PRIMARY KEY (tenant, id),
        UNIQUE (tenant, idempotency_key)
    );
    ALTER TABLE batches ENABLE ROW LEVEL SECURITY;
    ALTER TABLE batches FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON batches USING (tenant = public.ledger_tenant());
    GRANT SELECT ON batches TO ledger_api;
    GRANT SELECT, INSERT ON batches TO ledger_projector;

    -- Each tenant's chain: its count and head, written with the batch that moved them.
    CREATE TABLE chains (
        tenant         text PRIMARY KEY,
        count          bigint NOT NULL,
        head           bytea NOT NULL,
        log_partition  integer NOT NULL,
        log_offset     bigint NOT NULL
    );
    ALTER TABLE chains ENABLE ROW LEVEL SECURITY;
    ALTER TABLE chains FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON chains USING (tenant = public.ledger_tenant());
    GRANT SELECT ON chains TO ledger_api;
    GRANT SELECT, INSERT, UPDATE ON chains TO ledger_projector;

    -- Balance monitors, created and removed by records on the log (kinds `monitor` and `unmonitor`); the fold
    -- reads an account's active ones with its policy and decides crossings (docs/events.md).
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
    IF live IS NOT NULL AND live <> p_schema THEN
        EXECUTE format('INSERT INTO %I.tenants SELECT * FROM %I.tenants WHERE log_offset = -1', p_schema, live);
    END IF;
END
$fn$;

REVOKE ALL ON FUNCTION ledger_create_projection(text) FROM PUBLIC;
