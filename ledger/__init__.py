"""The pure core of the wallet ledger: request types, validation, the codec and the decision.

Nothing in this package performs I/O, reads the environment or chooses how it runs; `api/` and `projections/`
depend on it, never the reverse. Its modules may run compiled by mypyc: `infra/compiled.py` builds them, and
each service's package chooses the build before loading any of them (`infra.compiled.use`).
"""
