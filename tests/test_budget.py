"""clustering.budget: the run's deadline and the limits each client call gets from it."""

import threading

import pytest

from clustering import budget


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_without_a_budget_calls_get_finite_defaults():
    assert budget.active() is None
    assert budget.call_limits("x") == (budget.DEFAULT_RETRY_SECONDS, budget.MAX_REQUEST_SECONDS)


def test_a_call_gets_the_time_left_and_a_request_at_most_a_minute():
    clock = Clock()
    with budget.bounded(budget.Budget.lasting(300, clock)):
        assert budget.call_limits("x") == (300, budget.MAX_REQUEST_SECONDS)
        clock.now += 270
        assert budget.call_limits("x") == (30, 30)
        clock.now += 29.5
        with pytest.raises(budget.OutOfTime, match="out of time before reading: 0 s left"):
            budget.call_limits("reading")
    assert budget.active() is None


def test_check_keeps_a_reserve():
    clock = Clock()
    run = budget.Budget.lasting(40, clock)
    run.check("publish", reserve=30)
    clock.now += 10
    with pytest.raises(budget.OutOfTime, match="30 s left of the run's budget, 30 s needed"):
        run.check("publish", reserve=30)
    run.check("cluster")  # no reserve: still 30 s left


def test_out_of_time_is_a_timeout():
    assert issubclass(budget.OutOfTime, TimeoutError)


def test_budgets_are_per_thread():
    seen = []
    with budget.bounded(budget.Budget.lasting(5)):
        thread = threading.Thread(target=lambda: seen.append(budget.active()))
        thread.start()
        thread.join()
    assert seen == [None]
