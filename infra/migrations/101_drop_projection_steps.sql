-- The projection's steps are gone. A projection was built by a chain of functions, each migration that changed it
-- adding one (ledger_create_projection_v1, ledger_projection_v2 to v11, ledger_invariants) and applying it to the
-- schemas that existed (ledger_apply_projection_step; 018's backfill of versions, ledger_count_versions).
-- ledger_create_projection (infra/functions/) now holds the projection's whole DDL, and a change to the
-- projection is a versioned migration that alters the schemas that exist (infra/functions/README.md). On a fresh
-- database there is nothing to drop.
DROP FUNCTION IF EXISTS ledger_create_projection_v1(text);
DROP FUNCTION IF EXISTS ledger_projection_v2(text);
DROP FUNCTION IF EXISTS ledger_invariants(text);
DROP FUNCTION IF EXISTS ledger_projection_v3(text);
DROP FUNCTION IF EXISTS ledger_projection_v4(text);
DROP FUNCTION IF EXISTS ledger_projection_v5(text);
DROP FUNCTION IF EXISTS ledger_projection_v6(text);
DROP FUNCTION IF EXISTS ledger_projection_v7(text);
DROP FUNCTION IF EXISTS ledger_projection_v8(text);
DROP FUNCTION IF EXISTS ledger_projection_v9(text);
DROP FUNCTION IF EXISTS ledger_projection_v10(text);
DROP FUNCTION IF EXISTS ledger_projection_v11(text);
DROP FUNCTION IF EXISTS ledger_apply_projection_step(text);
DROP FUNCTION IF EXISTS ledger_count_versions();
