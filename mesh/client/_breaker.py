"""A circuit breaker per endpoint: pybreaker's state machine, driven from asyncio.

pybreaker's own async path needs tornado, so calls are not run through it. Instead
the caller asks `admit()` before a call and reports the outcome with `record()`;
the outcome is replayed into pybreaker as a synchronous call, so pybreaker keeps the
failure count and makes every closed -> open -> half-open -> closed transition.
On top of it, admission lets exactly one trial call through once the reset timeout
has passed; calls arriving while the trial runs fail fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

import grpc
import pybreaker

from mesh.config import BreakerPolicy

__all__ = ["FAILURE_CODES", "Admission", "EndpointBreaker"]

# Codes that may say the endpoint (not the request) is at fault. Others, such as
# NOT_FOUND or INVALID_ARGUMENT, are answers and count as successes; mesh.client's
# _outcome decides which failures with these codes are the endpoint's.
FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Admission:
    """Permission for one call; `trial` is set for the single half-open probe."""

    __slots__ = ("trial",)

    def __init__(self, trial: bool) -> None:
        self.trial = trial


_NORMAL = Admission(trial=False)


class _EndpointFailure(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


class EndpointBreaker:
    """One endpoint's breaker: `admit()` before a call, then `record()` (or `abandon()`)."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
        on_state_change: Callable[[str, str], None] | None = None,
    ) -> None:
        listeners = [_StateListener(on_state_change)] if on_state_change else []
        self._storage = _ClockedStorage(clock)
        self._breaker = pybreaker.CircuitBreaker(
            state_storage=self._storage,
            fail_max=policy.failure_threshold,
            reset_timeout=policy.reset_timeout,
            throw_new_error_on_trip=False,
            listeners=listeners,
            name=name,
        )
        self._clock = clock
        self._trial_running = False

    @property
    def state(self) -> str:
        """ "closed", "open" or "half-open"."""
        return str(self._breaker.current_state)

    @property
    def failures(self) -> int:
        return int(self._breaker.fail_counter)

    def retry_after(self) -> float:
        """Seconds until an open breaker admits a trial call (0 when it would now)."""
        if self.state != pybreaker.STATE_OPEN:
            return 0.0
        opened = self._storage.opened_at or self._clock()
        reopen = opened + dt.timedelta(seconds=self._breaker.reset_timeout)
        return max(0.0, (reopen - self._clock()).total_seconds())

    def admit(self) -> Admission | None:
        """An Admission if a call may go to this endpoint now, else None."""
        state = self.state
        if state == pybreaker.STATE_CLOSED:
            return _NORMAL
        if state == pybreaker.STATE_OPEN:
            if self.retry_after() > 0:
                return None
            self._breaker.half_open()
        if self._trial_running:
            return None
        self._trial_running = True
        return Admission(trial=True)

    def record(self, admission: Admission, code: grpc.StatusCode) -> None:
        """Report how an admitted call ended."""
        if admission.trial:
            self._trial_running = False
        if self.state == pybreaker.STATE_OPEN:
            return  # a call admitted before the breaker opened; it changes nothing now
        failure = _EndpointFailure(code) if code in FAILURE_CODES else None
        with contextlib.suppress(_EndpointFailure, pybreaker.CircuitBreakerError):
            self._breaker.call(_replay, failure)

    def abandon(self, admission: Admission) -> None:
        """The call was cancelled by its caller: it says nothing about the endpoint."""
        if admission.trial:
            self._trial_running = False


class _ClockedStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's in-memory storage (a public extension point), except that the open
    time comes from our clock, so that one clock (real or a test's) governs both
    opening and reopening. The breaker reads it back from here, its own object."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self._opened_on_our_clock: dt.datetime | None = None

    @property
    def opened_at(self) -> dt.datetime | None:
        return self._opened_on_our_clock

    @opened_at.setter
    def opened_at(self, _: dt.datetime) -> None:
        self._opened_on_our_clock = self._clock()


def _replay(failure: _EndpointFailure | None) -> None:
    if failure is not None:
        raise failure


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, callback: Callable[[str, str], None]) -> None:
        self._callback = callback

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._callback(str(cb.name), new_state.name)
