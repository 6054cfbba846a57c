"""clustering.adapters.budget: the run's deadline and the limits each client call gets from it."""

import threading

import pytest

from clustering.adapters import budget


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


# --- Rules pinned by mutation testing (tools/mutation.py) ------------------------------------


def test_the_documented_limits_without_a_budget_and_for_the_final_steps():
    # A CLI call may retry for two minutes and wait a minute per request; the steps after a
    # run stopped get 12 s, well inside the handler's 30 s margin before the timeout.
    assert budget.call_limits("x") == (120.0, 60.0)
    assert budget.FINAL_STEP_SECONDS == 12.0


def test_a_call_with_just_over_a_second_left_still_runs_and_gets_that_second():
    clock = Clock()
    with budget.bounded(budget.Budget.lasting(61, clock)):
        assert budget.call_limits("x") == (61, 60)  # the request cap is one minute exactly
        clock.now += 59.5
        assert budget.call_limits("x") == (1.5, 1.5)
        clock.now += 0.5
        with pytest.raises(budget.OutOfTime, match="1 s left of the run's budget, 1 s needed"):
            budget.call_limits("x")  # exactly the minimum left: no call starts


def test_check_without_a_reserve_runs_until_the_deadline():
    clock = Clock()
    run = budget.Budget.lasting(10, clock)
    clock.now += 9.5
    run.check("cluster")  # half a second left, nothing reserved
    clock.now += 2
    with pytest.raises(budget.OutOfTime, match="out of time before cluster: 0 s left"):
        run.check("cluster")  # past the deadline: the time left shows as 0, not negative


def test_budgets_are_equal_by_deadline_whatever_their_clock():
    assert budget.Budget(5.0, Clock()) == budget.Budget(5.0, Clock())
    assert budget.Budget(5.0, Clock()) != budget.Budget(6.0, Clock())
