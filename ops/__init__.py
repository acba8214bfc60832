"""Operators' tools: the `ledger` command line (replay, verify, status, tenants, keys)."""
