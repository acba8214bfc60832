"""The projector's adapter translates the drivers' errors into its own (`Transient`, `Poisoned`), and leaves
a bug or a broken invariant as it is, so the pipeline catches only what it can handle."""

from __future__ import annotations

import asyncpg
import pytest

from infra.producer import ProduceFailed
from projections.faults import Poisoned, Transient, translated


async def failing(error: BaseException) -> None:
    raise error


@pytest.mark.parametrize("error", [ConnectionRefusedError("refused"), TimeoutError(),
                                   asyncpg.CannotConnectNowError("starting up"),
                                   asyncpg.DeadlockDetectedError("deadlock"),
                                   # a program limit (54000) by its code, a listener's doing (review of 886dd87)
                                   asyncpg.ProgramLimitExceededError("too many notifications in the NOTIFY queue")])
async def test_faults_of_the_surroundings_are_transient(error: BaseException) -> None:
    with pytest.raises(Transient) as raised:
        await translated(failing(error))
    assert raised.value.__cause__ is error


@pytest.mark.parametrize("error", [asyncpg.UniqueViolationError("id taken"),
                                   asyncpg.StringDataRightTruncationError("value too long"),
                                   asyncpg.ProgramLimitExceededError("index row too large"),
                                   OverflowError("int too big to convert")])
async def test_what_a_record_holds_and_the_database_refuses_is_poisoned(error: BaseException) -> None:
    with pytest.raises(Poisoned) as raised:
        await translated(failing(error))
    assert raised.value.__cause__ is error and raised.value.detail == f"{type(error).__name__}: {error}"


async def test_a_broken_invariant_or_a_bug_is_raised_as_it_is() -> None:
    invariant = asyncpg.CheckViolationError("balance below zero")
    invariant.constraint_name = "balances_customer_not_negative"
    for error in (invariant, KeyError("a bug"), asyncpg.UndefinedTableError("no table")):
        with pytest.raises(type(error)) as raised:
            await translated(failing(error))
        assert raised.value is error


async def test_kafka_refusing_the_outcomes_is_transient_unless_for_good() -> None:
    with pytest.raises(Transient):
        await translated(failing(ProduceFailed("broker down", retriable=True, fatal=False)))
    fatal = ProduceFailed("fenced", retriable=False, fatal=True)
    with pytest.raises(ProduceFailed):
        await translated(failing(fatal))
