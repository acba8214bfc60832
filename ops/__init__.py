"""Operators' tools: the `ledger` command line (replay, verify, status, tenants, keys)."""

from infra import compiled

compiled.use()  # before any module of `ledger`: the compiled build when it is current
