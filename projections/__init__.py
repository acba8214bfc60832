"""The projector: reads `ledger.transactions` in order and maintains the PostgreSQL projections."""

from infra import compiled

compiled.use()  # before any module of `ledger`: the compiled build when it is current
