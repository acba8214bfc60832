"""The waiters of `wait=true` and `min_position`: every place is given back, and one tenant or key cannot
take the places of the others."""

from __future__ import annotations

import asyncio

import pytest

from api.progress import Progress, TooManyWaiting, WaitLimits
from ledger.errors import Unavailable
from ledger.positions import Position

FAR = Position(0, 10**12)
SHORT_S = 0.001


async def parked(progress: Progress, count: int) -> None:
    """Until `count` requests wait: a waiter parks on its first step, so a few loop turns suffice."""
    for _ in range(100):
        if progress.waiting == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{progress.waiting} waiting, expected {count}")


async def test_waiters_that_time_out_give_their_places_back() -> None:
    progress = Progress(WaitLimits(total_max=10, tenant_max=10, key_max=10))
    for _ in range(50):  # five times the bound: the old code refused every wait after the tenth
        assert not await progress.wait(FAR, SHORT_S, "a", "ka")
    assert progress.waiting == 0
    assert progress.heap_size(FAR.partition) == 0


async def test_many_concurrent_timeouts_leave_no_heap_behind() -> None:
    progress = Progress(WaitLimits(total_max=1000, tenant_max=1000, key_max=1000))
    results = await asyncio.gather(*(progress.wait(FAR, SHORT_S, "a", "ka") for _ in range(500)))
    assert not any(results)
    assert (progress.waiting, progress.heap_size(FAR.partition)) == (0, 0)


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    progress = Progress(WaitLimits(total_max=1, tenant_max=1, key_max=1))
    task = asyncio.create_task(progress.wait(FAR, 60, "a", "ka"))
    await parked(progress, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert progress.waiting == 0
    assert not await progress.wait(FAR, SHORT_S, "a", "ka")


async def test_a_flooding_tenant_is_refused_and_the_others_still_wait() -> None:
    progress = Progress(WaitLimits(total_max=100, tenant_max=2, key_max=100))
    position = Position(0, 5)
    flood = [asyncio.create_task(progress.wait(position, 60, "a", f"ka{i}")) for i in range(2)]
    await parked(progress, 2)
    with pytest.raises(TooManyWaiting):
        await progress.wait(position, 60, "a", "ka-other")
    other = asyncio.create_task(progress.wait(position, 60, "b", "kb"))
    await parked(progress, 3)
    progress.advance({0: 6})
    assert await asyncio.gather(*flood, other) == [True, True, True]
    assert progress.waiting == 0


async def test_one_key_is_bounded_within_its_tenant() -> None:
    progress = Progress(WaitLimits(total_max=100, tenant_max=10, key_max=1))
    first = asyncio.create_task(progress.wait(Position(1, 0), 60, "a", "k1"))
    await parked(progress, 1)
    with pytest.raises(TooManyWaiting):
        await progress.wait(Position(1, 0), 60, "a", "k1")
    second = asyncio.create_task(progress.wait(Position(1, 0), 60, "a", "k2"))
    await parked(progress, 2)
    progress.advance({1: 1})
    assert await asyncio.gather(first, second) == [True, True]


async def test_the_global_bound_is_still_503() -> None:
    progress = Progress(WaitLimits(total_max=1, tenant_max=10, key_max=10, tenant_reserved=0))
    task = asyncio.create_task(progress.wait(FAR, 60, "a", "ka"))
    await parked(progress, 1)
    with pytest.raises(Unavailable):
        await progress.wait(FAR, 60, "b", "kb")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_advance_wakes_in_order_past_waiters_that_left() -> None:
    progress = Progress(WaitLimits())
    gone = [asyncio.create_task(progress.wait(Position(0, o), SHORT_S, "a", "ka")) for o in range(10, 20)]
    stays = [asyncio.create_task(progress.wait(Position(0, o), 60, "a", "ka")) for o in range(10, 13)]
    assert not any(await asyncio.gather(*gone))
    progress.advance({0: 12})
    assert [await stays[0], await stays[1]] == [True, True]
    assert not stays[2].done()
    progress.advance({0: 13})
    assert await stays[2]
    assert progress.waiting == 0


async def test_tenants_flooding_the_whole_room_leave_a_reserved_share_to_the_others() -> None:
    limits = WaitLimits(total_max=20, tenant_max=10, key_max=10, tenant_reserved=2)
    progress = Progress(limits)
    floods = [asyncio.create_task(progress.wait(FAR, 10, tenant, f"k{tenant}")) for tenant in "ab" for _ in range(10)]
    await parked(progress, 20)
    quiet = [asyncio.create_task(progress.wait(FAR, 10, "c", "kc")) for _ in range(2)]
    await parked(progress, 22)  # admitted past total_max: tenant c had fewer than its reserved share
    with pytest.raises(Unavailable):
        await progress.wait(FAR, 10, "c", "kc")  # a third is past c's share
    for task in floods + quiet:
        task.cancel()
    await asyncio.gather(*floods, *quiet, return_exceptions=True)
    assert progress.waiting == 0
