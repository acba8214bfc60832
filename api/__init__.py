"""The HTTP API: a thin Starlette app over the log (writes) and the projections (reads)."""

from infra import compiled

compiled.use()  # before any module of `ledger`: the compiled build when it is current
