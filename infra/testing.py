"""`make test`: start the services as `make run` does, run pytest against them, stop what was started.

Tests use their own database (`ledger_test`) and consumer group, so a `make run` stack's data is safe.
Exits with pytest's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

from infra import local, processes
from ledger import settings as settings_mod

TEST_DATABASE = "ledger_test"


def test_database_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{TEST_DATABASE}", parts.query, parts.fragment))


def main() -> None:
    local_services = not (os.environ.get("LEDGER_KAFKA_BOOTSTRAP") or os.environ.get("LEDGER_DATABASE_URL"))
    started_pg, started_kafka = local.up()
    try:
        base = settings_mod.load()
        env = processes.child_env(
            LEDGER_DATABASE_URL=test_database_url(base.database_url),
            LEDGER_KAFKA_BOOTSTRAP=base.kafka_bootstrap,
            LEDGER_PROJECTOR_GROUP="ledger-projector-test",
            # Fault tests stop and restart the services, which they may do only to the project's own.
            LEDGER_TEST_LOCAL_SERVICES="1" if local_services else "",
        )
        processes.prepare(env)
        status = subprocess.run([sys.executable, "-m", "pytest", *sys.argv[1:]], env=env, check=False).returncode
    finally:
        local.stop_started(started_pg, started_kafka)
    sys.exit(status)


if __name__ == "__main__":
    main()
