"""The one holder of a librdkafka producer (`infra.producer.RenewingProducer`): the same producer while it is
usable, a new one once librdkafka declared it unusable, the old one stopped in the background."""

from __future__ import annotations

import asyncio

from infra.producer import RenewingProducer, producer_config


async def test_a_producer_is_kept_while_usable_and_replaced_once_fatal() -> None:
    holder = RenewingProducer(producer_config("127.0.0.1:1", delivery_timeout_ms=1000), "test", 0.1)
    first = holder.current()
    assert holder.current() is first
    first.fatal = "an idempotence sequence it cannot recover"
    second = holder.current()
    assert second is not first and second.fatal is None
    assert holder.current() is second
    await asyncio.sleep(0.5)  # the retired one stops in the background
    assert not holder._retired
    await holder.stop()
