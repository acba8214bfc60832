"""A record Kafka acknowledges without an offset (librdkafka's DUPLICATE_SEQUENCE_NUMBER: a retried batch the
new leader already had). `make soak-cluster` found the API answering 500 for it (offset None + 1)."""

from __future__ import annotations

import asyncio

import pytest

from api.appender import Appender
from infra.producer import LogProducer, producer_config
from ledger.errors import AppendUnconfirmed
from ledger.positions import Position


class _Message:
    def __init__(self, partition: int, offset: int | None) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int | None:
        return self._offset


@pytest.mark.parametrize("offset", [None, -1001])
async def test_the_producer_reports_an_unknown_offset_as_none(offset: int | None) -> None:
    producer = LogProducer(producer_config("127.0.0.1:1", delivery_timeout_ms=1000))
    try:
        known, unknown = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()
        producer._reports.extend([(known, None, _Message(2, 41)), (unknown, None, _Message(3, offset))])
        producer._resolve()
        assert known.result() == (2, 41)
        assert unknown.result() == (3, None)
    finally:
        await producer.stop(0.1)


async def test_an_append_without_an_offset_is_placed_below_the_log_end() -> None:
    appender = Appender("127.0.0.1:1", "ledger.transactions")

    async def log_end() -> dict[int, int]:
        return {0: 7, 1: 120}

    appender.log_end = log_end  # type: ignore[method-assign]
    assert await appender._placed([(0, 3), (1, None)], "acme", "a,b") == [Position(0, 3), Position(1, 119)]
    assert await appender._placed([(0, 3)], "acme", "a") == [Position(0, 3)]


async def test_an_append_without_an_offset_is_unconfirmed_when_the_end_is_unknown() -> None:
    appender = Appender("127.0.0.1:1", "ledger.transactions")

    async def log_end() -> None:
        return None

    appender.log_end = log_end  # type: ignore[method-assign]
    with pytest.raises(AppendUnconfirmed):
        await appender._placed([(1, None)], "acme", "a")
