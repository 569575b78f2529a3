"""mesh.client.RetryBudgetMeter on a fake clock: retries within percent% of the calls of
the last 10 s plus min_retries_per_second * 10."""

from __future__ import annotations

import pytest

from mesh.client import RetryBudgetMeter
from mesh.config import RetryBudget


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def meter(clock: FakeClock, percent: float = 20.0, floor: int = 0) -> RetryBudgetMeter:
    return RetryBudgetMeter(RetryBudget(percent=percent, min_retries_per_second=floor), clock=clock)


def calls(budget: RetryBudgetMeter, count: int) -> None:
    for _ in range(count):
        budget.record_call()


def retries_allowed(budget: RetryBudgetMeter, asked: int = 1000) -> int:
    return sum(budget.allow_retry() for _ in range(asked))


def test_retries_are_allowed_up_to_the_share_of_calls() -> None:
    budget = meter(FakeClock(), percent=20.0)
    calls(budget, 10)

    assert [budget.allow_retry() for _ in range(3)] == [True, True, False]


def test_the_floor_allows_retries_without_calls() -> None:
    budget = meter(FakeClock(), percent=20.0, floor=1)

    assert retries_allowed(budget) == 10  # 1 a second over the 10 s window


def test_share_and_floor_add_up() -> None:
    budget = meter(FakeClock(), percent=50.0, floor=2)
    calls(budget, 10)

    assert retries_allowed(budget) == 5 + 20


def test_no_budget_no_retry() -> None:
    budget = meter(FakeClock(), percent=0.0, floor=0)
    calls(budget, 100)

    assert budget.allow_retry() is False


def test_a_refused_retry_is_not_counted() -> None:
    budget = meter(FakeClock(), percent=10.0)
    calls(budget, 10)
    assert retries_allowed(budget) == 1

    calls(budget, 10)  # 20 calls: room for a second retry, the refusals took none

    assert retries_allowed(budget) == 1


def test_counts_older_than_ten_seconds_expire() -> None:
    clock = FakeClock()
    budget = meter(clock, percent=20.0)
    calls(budget, 10)
    assert retries_allowed(budget) == 2

    clock.now += 9.0  # still inside the window: the retries are still counted
    assert retries_allowed(budget) == 0

    clock.now += 1.0  # the first second has left the window, calls and retries alike
    assert retries_allowed(budget) == 0
    calls(budget, 10)
    assert retries_allowed(budget) == 2


def test_the_window_slides_a_second_at_a_time() -> None:
    clock = FakeClock(1000.5)
    budget = meter(clock, percent=100.0)
    calls(budget, 4)  # second 1000
    clock.now += 5
    calls(budget, 6)  # second 1005
    assert retries_allowed(budget) == 10

    clock.now += 5  # second 1010: 1000's calls and nothing else has gone
    assert retries_allowed(budget) == 0

    clock.now += 5  # 1015: the retries (made in 1005) and 1005's calls have gone
    calls(budget, 3)
    assert retries_allowed(budget) == 3


@pytest.mark.parametrize("gap", [10.0, 11.0, 1000.0])
def test_after_a_long_pause_everything_has_expired(gap: float) -> None:
    clock = FakeClock()
    budget = meter(clock, percent=100.0)
    calls(budget, 50)
    assert retries_allowed(budget, 5) == 5

    clock.now += gap
    calls(budget, 1)

    assert retries_allowed(budget) == 1
