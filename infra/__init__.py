"""What the services run on: settings (the one reader of the environment), logging, migrations and SQL
functions, topics, the Kafka helpers, the retry policy, and the choice of the compiled build. None of the
ledger's logic, and none of the developer tooling (`tools/`: local services, the test runner, the build)."""
