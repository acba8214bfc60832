"""Developer tooling: what a developer's machine runs, never a service: Kafka and PostgreSQL started locally
(`local`), the ledger's processes (`processes`, `make run`: `run`), the cluster and its supervisor
(`make cluster`), the test runner (`testing`), the mypyc build (`compiled`) and Prometheus (`observe`).

It may import `infra/`; no service's package imports it (tests/unit/test_layout.py).
"""
