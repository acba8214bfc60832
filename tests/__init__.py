"""The test suite: unit tests of the pure core, and tests against real Kafka and PostgreSQL."""

from infra import compiled

compiled.use()  # as the services do, before any module of `ledger` is imported
