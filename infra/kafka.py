"""The small Kafka helpers that `api/`, `client/`, `projections/` and `ops/` share."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

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
