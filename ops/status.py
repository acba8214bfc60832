"""`ledger status`: per partition, the log's end, the projection's position and the lag; and the group."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.kafka import consumer, log_end
from projections.writer import committed_offsets

FETCH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    log_end: int
    projected: int
    lag_events: int
    lag_seconds: float | None


async def _oldest_pending_ms(bootstrap: str, topic: str, pending: dict[int, int]) -> dict[int, int]:
    """The timestamp of the first record not yet projected, per lagging partition."""
    if not pending:
        return {}
    kafka = consumer(bootstrap)
    await kafka.start()
    try:
        stamps = {}
        for partition, offset in pending.items():
            tp = TopicPartition(topic, partition)
            kafka.assign([tp])
            kafka.seek(tp, offset)
            batch = await kafka.getmany(tp, timeout_ms=int(FETCH_TIMEOUT_S * 1000), max_records=1)
            for messages in batch.values():
                stamps[partition] = messages[0].timestamp
        return stamps
    finally:
        await kafka.stop()


async def partitions(url: str, bootstrap: str, topic: str) -> list[PartitionStatus]:
    end = await log_end(bootstrap, topic)
    conn = await asyncpg.connect(url)
    try:
        projected = await committed_offsets(conn, str(await conn.fetchval("SELECT active_schema FROM ledger_meta")))
    finally:
        await conn.close()
    pending = {p: projected.get(p, 0) for p, e in end.items() if projected.get(p, 0) < e}
    stamps = await _oldest_pending_ms(bootstrap, topic, pending)
    now_ms = time.time() * 1000

    def lag_s(p: int) -> float | None:
        if p in stamps:
            return round((now_ms - stamps[p]) / 1000, 1)
        return None if p in pending else 0.0

    return [PartitionStatus(p, e, projected.get(p, 0), max(0, e - projected.get(p, 0)), lag_s(p))
            for p, e in sorted(end.items())]


async def limits(url: str) -> dict[str, Any]:
    """The tenants' limits in force: the operator's (`tenant_limits`), and the live API processes that share
    them (each enforces 1/n)."""
    conn = await asyncpg.connect(url)
    try:
        custom = [dict(r) for r in await conn.fetch(
            "SELECT tenant, writes_per_s, reads_per_s, burst_s FROM tenant_limits ORDER BY tenant")]
        live = await conn.fetchval("SELECT count(*) FROM api_processes WHERE seen_at > now() - interval '3 seconds'")
    finally:
        await conn.close()
    return {"custom": custom, "api_processes": live}


async def group_members(bootstrap: str, group: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    members = []
    for response in described:
        for g in response.groups:
            for m in g[5] if len(g) > 5 else []:
                members.append({"member_id": m[0], "client_id": m[1], "host": m[2], "state": g[2]})
    return members
