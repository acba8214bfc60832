"""`make run`'s supervision: a child that restarts too often is left stopped, alone, until an operator asks."""

from __future__ import annotations

import os

from tools.run import RESTARTS_MAX, RestartBudget, given_up_banner


def test_restarts_stop_at_the_limit_within_the_window_and_resume_after_it() -> None:
    budget = RestartBudget(limit=3, window_s=10)
    assert [budget.allow(t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert budget.allow(10.5)  # the restart at 0 has left the window


def test_each_child_has_its_own_budget_and_an_operator_resets_one() -> None:
    projector, api = RestartBudget(), RestartBudget()
    assert all(projector.allow(float(t)) for t in range(RESTARTS_MAX))
    assert not projector.allow(float(RESTARTS_MAX))
    assert api.allow(float(RESTARTS_MAX))  # the API is not stopped with the projector
    projector.reset()
    assert projector.allow(float(RESTARTS_MAX))


def test_the_banner_says_what_happened_and_how_to_restart() -> None:
    banner = given_up_banner("projector", 70, ".data/logs/projector.log")
    assert "NOT restarted" in banner and f"kill -HUP {os.getpid()}" in banner and "projector.log" in banner
