"""The producer client's positions: raw for matching outcomes, and the tenant's token when it holds the key."""

from __future__ import annotations

from client import LedgerProducer, Submitted
from ledger.positions import Position, PositionKey

KEY = bytes(range(32))


async def test_a_producer_with_the_key_makes_the_token_the_api_would_give() -> None:
    producer = LedgerProducer("127.0.0.1:9", follow_outcomes=False, position_key=KEY)  # never started
    token = producer.token("acme", Position(1, 7))
    await producer.stop()
    assert token is not None and PositionKey(KEY).parse("acme", token) == Position(1, 7)


async def test_without_the_key_there_is_no_token() -> None:
    producer = LedgerProducer("127.0.0.1:9", follow_outcomes=False)
    assert producer.token("acme", Position(1, 7)) is None
    await producer.stop()
    assert Submitted("acme", "tx1", Position(1, 7)).token is None
