"""The pure core of the wallet ledger: request types, validation, the codec and the decision.

Nothing in this package performs I/O; `api/` and `projections/` depend on it, never the reverse.
"""
