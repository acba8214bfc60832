"""The projector: reads `ledger.transactions` in order and maintains the PostgreSQL projections."""
