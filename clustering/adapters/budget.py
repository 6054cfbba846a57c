"""Time budgets: every Google client call is bounded by the time the run has left.

A deployed run must end before the function timeout: the platform answers 504 at the timeout
but does not stop the thread, and a run that kept going could publish after a redelivery took
its event over. So the handler opens a `Budget` that ends a safety margin before the timeout,
and the Cloud Storage and BigQuery adapters take each call's retry deadline and per-request
timeout from it (`call_limits`). Out of time is `OutOfTime`, a transient error: the event is
released and retried.

The active budget is a context variable rather than a parameter of every adapter function:
it is an edge concern (how long may this call wait) that the core never sees, and a context
variable is per thread, so concurrent runs in one process (tests) do not share it. Without an
active budget (the CLI) calls still get finite defaults.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

# Without a budget (local CLI runs): a call may retry for two minutes, a request wait a minute.
DEFAULT_RETRY_SECONDS = 120.0
# A single HTTP request never waits longer than this, even with more time left: a stuck
# connection is better retried than waited on.
MAX_REQUEST_SECONDS = 60.0
# Never hand a client less than this: a zero or negative timeout means "no timeout" to some.
MIN_CALL_SECONDS = 1.0
# The steps after a run stopped (release its claim, append its history row) get a budget of
# their own, well inside the handler's margin before the function timeout.
FINAL_STEP_SECONDS = 12.0


class OutOfTime(TimeoutError):
    """The run's budget is spent: stop, release the event, let the trigger retry it."""


@dataclass(frozen=True)
class Budget:
    """A deadline on the monotonic clock; `clock` is injectable for tests."""

    deadline: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def lasting(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Budget:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def check(self, step: str, reserve: float = 0.0) -> None:
        """Raise OutOfTime unless more than `reserve` seconds are left for `step`."""
        left = self.remaining()
        if left <= reserve:
            raise OutOfTime(
                f"out of time before {step}: {max(left, 0.0):.0f} s left of the run's budget, "
                f"{reserve:.0f} s needed; the run stops without publishing more"
            )


_ACTIVE: ContextVar[Budget | None] = ContextVar("clustering_budget", default=None)


@contextlib.contextmanager
def bounded(budget: Budget | None) -> Iterator[Budget | None]:
    """Make `budget` the active one inside the block (None: no budget, defaults apply)."""
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


def active() -> Budget | None:
    return _ACTIVE.get()


def call_limits(step: str) -> tuple[float, float]:
    """(retry deadline, per-request timeout) in seconds for the next client call.

    Raises OutOfTime when the active budget has less than MIN_CALL_SECONDS left, so no call
    starts that could only end after the run's deadline.
    """
    budget = active()
    if budget is None:
        return DEFAULT_RETRY_SECONDS, MAX_REQUEST_SECONDS
    budget.check(step, reserve=MIN_CALL_SECONDS)
    left = budget.remaining()
    return left, max(MIN_CALL_SECONDS, min(left, MAX_REQUEST_SECONDS))
