"""Whether any projector is consuming: the members of the projectors' Kafka consumer group, for `/readyz`.

Lag alone does not tell: with no writes coming in, a dead projector leaves no lag. Asking Kafka costs a round
trip or two (find the coordinator, describe the group), so the answer is kept for `CACHE_S` and computed by
one caller at a time; only `/readyz` asks, never a request's path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

log = logging.getLogger("ledger.api")

CACHE_S = 3.0
DESCRIBE_TIMEOUT_S = 1.0


class ProjectorGroup:
    """`problem()`: None while the group has members, else why the projection is not moving."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._answer: str | None = "not asked yet"
        self._asked_at = float("-inf")

    async def problem(self) -> str | None:
        async with self._lock:
            if time.monotonic() - self._asked_at >= CACHE_S:
                self._answer = await self._ask()
                self._asked_at = time.monotonic()
            return self._answer

    async def _ask(self) -> str | None:
        try:
            async with asyncio.timeout(DESCRIBE_TIMEOUT_S):
                admin = await self._started()
                described = (await admin.describe_consumer_groups([self.group]))[0].to_object()
        except (KafkaError, OSError, TimeoutError) as e:
            return f"cannot ask Kafka about consumer group {self.group!r}: {type(e).__name__}"
        group = described["groups"][0]
        if group["error_code"] != 0:
            return f"Kafka answered error {group['error_code']} for consumer group {self.group!r}"
        if not group["members"]:
            return f"no projector is consuming (consumer group {self.group!r} is {group['state']}, with no members)"
        return None

    async def _started(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=int(DESCRIBE_TIMEOUT_S * 1000))
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
