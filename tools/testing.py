"""`make test`: start the services as `make run` does, run pytest against them, stop what was started.

Each run is a world of its own: its own database, topics, consumer group and API port, all named after a
run id and removed afterwards. So a `make run` stack's data is safe, two runs may share the services, and a
run never reads the history of earlier ones (the suite costs the same the hundredth time). Exits with
pytest's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import uuid

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from infra import settings as settings_mod
from infra.settings import Settings, with_database
from tools import local, processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def session_env(base: Settings, run_id: str, local_services: bool) -> dict[str, str]:
    return processes.child_env(
        LEDGER_DATABASE_URL=with_database(base.database_url, f"ledger_test_{run_id}"),
        LEDGER_KAFKA_BOOTSTRAP=base.kafka_bootstrap,
        LEDGER_TRANSACTIONS_TOPIC=f"test-{run_id}.transactions",
        LEDGER_OUTCOMES_TOPIC=f"test-{run_id}.outcomes",
        LEDGER_PROJECTOR_GROUP=f"ledger-projector-test-{run_id}",
        LEDGER_API_PORT=str(free_port()),
        # Shared by the run's API, projectors, and the tests, which make and open tokens themselves.
        LEDGER_POSITION_KEY=processes.position_key(base),
        # Fault tests stop and restart the services, which they may do only to the project's own.
        LEDGER_TEST_LOCAL_SERVICES="1" if local_services else "",
        LEDGER_TEST_RUN_ID=run_id,
    )


async def remove_world(cfg: Settings) -> None:
    """Drop the run's database and delete its topics: nothing of a run outlives it."""
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        conn = await asyncpg.connect(with_database(cfg.database_url, "postgres"), timeout=5)
        try:
            name = cfg.database_url.rsplit("/", 1)[1]
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap, request_timeout_ms=15000)
    with contextlib.suppress(KafkaError, OSError):
        await admin.start()
        try:
            await admin.delete_topics([cfg.transactions_topic, cfg.outcomes_topic])
        finally:
            await admin.close()


def main() -> None:
    base = settings_mod.load()
    local_services = not (base.kafka_external or base.database_external)
    started_pg, started_kafka = local.up()
    env = session_env(base, uuid.uuid4().hex[:10], local_services)
    try:
        processes.prepare(env)
        status = subprocess.run([sys.executable, "-m", "pytest", *sys.argv[1:]], env=env, check=False).returncode
    finally:
        # A fault test may have left a service stopped: bring it back to clean up, then stop what we started.
        again_pg, again_kafka = local.up()
        asyncio.run(remove_world(settings_mod.load(env)))
        local.stop_started(started_pg or again_pg, started_kafka or again_kafka)
    sys.exit(status)


if __name__ == "__main__":
    main()
