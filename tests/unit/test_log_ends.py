"""The cached end of the log: no Kafka round trip for a position it knows, one shared refresh for those it
does not, never answered from a fetch older than the question."""

from __future__ import annotations

import asyncio

import pytest

from api.log_ends import LogEnds
from ledger.errors import Unavailable
from ledger.positions import Position


class Log:
    """Stands in for Kafka's answer: the ends it reports, and how often it was asked."""

    def __init__(self, ends: dict[int, int] | None) -> None:
        self.ends = ends
        self.asked = 0

    async def fetch(self) -> dict[int, int] | None:
        self.asked += 1
        await asyncio.sleep(0)
        return None if self.ends is None else dict(self.ends)


async def test_a_position_below_an_appended_one_costs_no_fetch() -> None:
    log = Log({0: 100})
    ends = LogEnds(log.fetch)
    ends.advance(Position(0, 41))
    assert not await ends.beyond(Position(0, 41))
    assert not await ends.beyond(Position(0, 0))
    assert log.asked == 0


async def test_positions_past_the_end_or_on_no_partition_are_beyond_after_one_shared_fetch() -> None:
    log = Log({0: 100, 1: 5})
    ends = LogEnds(log.fetch)
    asked = [Position(0, 100), Position(0, 99), Position(7, 0), Position(1, 4)] * 25
    answers = await asyncio.gather(*(ends.beyond(p) for p in asked))
    assert answers[:4] == [True, False, True, False]
    assert log.asked == 1


async def test_a_question_after_a_fetch_waits_for_the_next_fetch() -> None:
    log = Log({0: 10})
    ends = LogEnds(log.fetch, refresh_interval_s=0.05)
    assert await ends.beyond(Position(0, 10))
    log.ends = {0: 11}  # appended by another producer since
    assert not await ends.beyond(Position(0, 10))
    assert log.asked == 2


async def test_kafka_not_answering_is_unavailable() -> None:
    ends = LogEnds(Log(None).fetch)
    with pytest.raises(Unavailable):
        await ends.beyond(Position(0, 0))
