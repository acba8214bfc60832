"""Creates the ledger's Kafka topics with explicit settings (never left to broker auto-creation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from infra import settings as settings_mod

log = logging.getLogger("ledger.topics")

# The log is the source of truth: kept forever, timestamped by the broker so that a record's time is
# part of the log and replays reproduce it.
TRANSACTIONS_CONFIG = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "LogAppendTime",
}
OUTCOMES_CONFIG = {"retention.ms": str(7 * 24 * 3600 * 1000), "message.timestamp.type": "LogAppendTime"}


async def ensure_topics(bootstrap: str, topics: tuple[str, str], partitions: int, replication: int = 1) -> None:
    """Both topics; with 3 replicas an append needs 2 of them in sync (acks=all), so one broker may fail."""
    min_isr = {"min.insync.replicas": str(min(2, replication))}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        transactions, outcomes = topics
        wanted = [
            NewTopic(transactions, partitions, replication, topic_configs=TRANSACTIONS_CONFIG | min_isr),
            NewTopic(outcomes, partitions, replication, topic_configs=OUTCOMES_CONFIG | min_isr),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process created it first
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = settings_mod.load()
    topics = (cfg.transactions_topic, cfg.outcomes_topic)
    asyncio.run(ensure_topics(cfg.kafka_bootstrap, topics, cfg.topic_partitions, cfg.topic_replication))


if __name__ == "__main__":
    main()
