"""The retry budget of one service's channel, as Linkerd budgets retries.

Retries help when one endpoint fails and hurt when the whole service is overloaded:
there, every retry is more load. So retries are allowed only while the retries of the
last 10 seconds stay within `percent`% of the calls of those 10 seconds, plus a floor
of `min_retries_per_second` (so a quiet service can still retry). Beyond that, a
failed attempt ends its call. The counts are a ring of per-second counters: counting a
call is an index and an addition, the sums are taken only when a retry asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mesh.config import RetryBudget

__all__ = ["WINDOW_SECONDS", "RetryBudgetMeter"]

WINDOW_SECONDS = 10


class RetryBudgetMeter:
    """Counts calls and retries over the last WINDOW_SECONDS seconds of `clock`."""

    __slots__ = ("_clock", "_floor", "_ratio", "_requests", "_retries", "_second")

    def __init__(self, budget: RetryBudget, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ratio = budget.percent / 100
        self._floor = budget.min_retries_per_second * WINDOW_SECONDS
        self._clock = clock
        self._second = int(clock())
        self._requests = [0] * WINDOW_SECONDS
        self._retries = [0] * WINDOW_SECONDS

    def record_call(self) -> None:
        """One call started (its retries are not calls)."""
        self._requests[self._slot()] += 1

    def allow_retry(self) -> bool:
        """Whether one more retry fits the budget; if it does, it is counted."""
        slot = self._slot()
        allowed = sum(self._retries) + 1 <= self._ratio * sum(self._requests) + self._floor
        if allowed:
            self._retries[slot] += 1
        return allowed

    def _slot(self) -> int:
        """The counters' index for this second, after clearing the seconds that passed
        since the last count (they now stand for seconds of the new window)."""
        second = int(self._clock())
        if second > self._second:
            for passed in range(self._second + 1, min(second, self._second + WINDOW_SECONDS) + 1):
                self._requests[passed % WINDOW_SECONDS] = 0
                self._retries[passed % WINDOW_SECONDS] = 0
            self._second = second
        return self._second % WINDOW_SECONDS
