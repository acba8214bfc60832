"""The one retry policy (`infra.retry`): its backoff, its deadline, and that a cancelled call is not retried."""

from __future__ import annotations

import asyncio
import random

import pytest

from infra.retry import Backoff, RetriesExhausted, retrying


def transient(error: BaseException) -> bool:
    return isinstance(error, ConnectionError)


def test_delays_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(first_s=0.05, cap_s=2.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff.delay(10_000) == 2.0  # no overflow however many attempts


def test_jitter_draws_from_the_upper_half_of_each_delay() -> None:
    backoff, rng = Backoff(first_s=5.0, cap_s=3600.0, jitter=True), random.Random(7)
    for attempt in range(1, 40):
        base = min(5.0 * 2 ** (attempt - 1), 3600.0)
        assert base / 2 <= backoff.delay(attempt, rng) <= base
    draws = {round(backoff.delay(1, rng), 6) for _ in range(50)}
    assert len(draws) > 40  # spread, not one value


async def test_a_transient_fault_is_retried_and_the_call_answers() -> None:
    calls: list[int] = []
    retried: list[BaseException] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    answer = await retrying(call, transient=transient, backoff=Backoff(0.001, 0.01), deadline_s=5, what="x",
                            on_retry=retried.append)
    assert (answer, len(calls), [type(e) for e in retried]) == ("ok", 3, [ConnectionError, ConnectionError])


async def test_any_other_fault_is_raised_at_once() -> None:
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        await retrying(call, transient=transient, backoff=Backoff(0.001, 0.01), deadline_s=5, what="x")
    assert len(calls) == 1


async def test_past_the_deadline_it_gives_up_with_the_last_fault_as_cause() -> None:
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)
        raise ConnectionError(f"down {len(calls)}")

    with pytest.raises(RetriesExhausted) as raised:
        await retrying(call, transient=transient, backoff=Backoff(0.01, 0.02), deadline_s=0.1, what="x")
    assert len(calls) >= 2 and str(raised.value.__cause__) == f"down {len(calls)}"


async def test_a_call_failing_while_its_task_is_cancelled_is_not_retried() -> None:
    calls: list[int] = []
    entered = asyncio.Event()

    async def call() -> None:
        calls.append(1)
        entered.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ConnectionError("the connection was terminated by the cancellation") from None

    task = asyncio.create_task(retrying(call, transient=transient, backoff=Backoff(0.001, 0.01), deadline_s=60,
                                        what="x"))
    await entered.wait()
    task.cancel()
    with pytest.raises(ConnectionError):
        await task
    assert len(calls) == 1
