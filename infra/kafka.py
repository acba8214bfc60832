"""The small Kafka helpers that `api/`, `client/`, `projections/`, `dispatch/` and `ops/` share."""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

log = logging.getLogger("ledger.kafka")

# Bounds what a reading consumer (replay, verify, status) prefetches per partition.
FETCH_PARTITION_BYTES_MAX = 8 * 1024 * 1024


def consumer(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer outside any group, positioned by hand (`assign` and `seek`)."""
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                            max_partition_fetch_bytes=FETCH_PARTITION_BYTES_MAX)


async def topic_partitions(kafka: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`. An unsubscribed consumer tracks no topic's metadata, so ask the cluster
    (as `AIOKafkaConsumer.topics()` itself does); the one place that calls aiokafka's private client."""
    cluster = await kafka._client.fetch_all_metadata()
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def end_offsets(kafka: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    """The next offset to be written, per partition of `topic`, through a started consumer."""
    tps = await topic_partitions(kafka, topic)
    return {tp.partition: offset for tp, offset in (await kafka.end_offsets(tps)).items()}


async def log_end(bootstrap: str, topic: str) -> dict[int, int]:
    """`end_offsets` with a consumer of its own."""
    kafka = consumer(bootstrap)
    await kafka.start()
    try:
        return await end_offsets(kafka, topic)
    finally:
        await kafka.stop()


async def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    """One configuration value of `topic` as the broker has it (None if the topic or value is missing)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            error_code, _, _, _, entries = resource[:5]
            if error_code:
                return None
            for entry in entries:
                if entry[0] == name:
                    return str(entry[1])
    return None


class PacedCommits:
    """A group consumer's offsets committed to Kafka at most once per `interval_s`, and only when they moved:
    the projector's (for lag tooling; PostgreSQL's offsets decide) and the dispatcher's (where a restart reads
    again from them, and storing again changes nothing). Only partitions still assigned are committed: after a
    rebalance another member owns the others."""

    def __init__(self, consumer: AIOKafkaConsumer, interval_s: float = 1.0) -> None:
        self.consumer = consumer
        self.interval_s = interval_s
        self.offsets: dict[TopicPartition, int] = {}  # per partition, the next offset after what is done
        self.moved = False
        self.committed_at = 0.0

    def done(self, offsets: dict[TopicPartition, int]) -> None:
        """Everything before these offsets is done with (applied, stored)."""
        if offsets:
            self.offsets.update(offsets)
            self.moved = True

    async def commit(self, force: bool = False) -> None:
        """Commit what moved, unless the last commit is younger than `interval_s` (`force`: whatever its age).
        A failure is logged and retried at the next call."""
        now = time.monotonic()
        if not self.moved or (now - self.committed_at < self.interval_s and not force):
            return
        self.committed_at = now
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in self.offsets.items() if tp in assigned}
        try:
            if offsets:
                await self.consumer.commit(offsets)
        except KafkaError as e:
            log.info("Kafka offsets not committed this time (%r)", e)
            return
        self.moved = False
