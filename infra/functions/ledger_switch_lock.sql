-- The advisory lock that serializes a switch of the live projection (ledger_activate_projection, `ledger replay`)
-- against the projector's batches (projector_begin), named in one place.
CREATE OR REPLACE FUNCTION ledger_switch_lock() RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT 7215829::bigint $$;

REVOKE ALL ON FUNCTION ledger_switch_lock() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_switch_lock() TO ledger_projector;
