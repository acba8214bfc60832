"""Developer tooling: what a developer's machine runs to host the ledger (`make cluster`).

It may import `infra/`; nothing in `api/`, `projections/`, `infra/` or `ledger/` imports it (tests/unit/test_layout.py).
"""
