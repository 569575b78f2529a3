"""mesh.client EndpointBreaker: pybreaker's state machine, admission and one trial call,
driven by a fake clock."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from mesh.client import FAILURE_CODES, EndpointBreaker
from mesh.config import BreakerPolicy

THRESHOLD = 3
RESET = 10.0
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


class FakeClock:
    """The breaker's only clock: it stamps opened_at and judges the reset timeout.
    It moves only when told to."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: list[tuple[str, str]]) -> EndpointBreaker:
    return EndpointBreaker(
        "inventory-1",
        BreakerPolicy(failure_threshold=THRESHOLD, reset_timeout=RESET),
        clock=clock,
        on_state_change=lambda name, state: changes.append((name, state)),
    )


def fail(breaker: EndpointBreaker, times: int, code: grpc.StatusCode = UNAVAILABLE) -> None:
    for _ in range(times):
        admission = breaker.admit()
        assert admission is not None
        breaker.record(admission, code)


def open_breaker(breaker: EndpointBreaker) -> None:
    fail(breaker, THRESHOLD)
    assert breaker.state == "open"


def test_a_closed_breaker_admits_normal_calls(breaker: EndpointBreaker) -> None:
    admission = breaker.admit()

    assert admission is not None
    assert not admission.trial
    assert breaker.state == "closed"
    assert breaker.retry_after() == 0.0


@pytest.mark.parametrize("code", sorted(FAILURE_CODES, key=str))
def test_consecutive_failures_open_it(breaker: EndpointBreaker, code: grpc.StatusCode) -> None:
    fail(breaker, THRESHOLD - 1, code)
    assert breaker.state == "closed"
    assert breaker.failures == THRESHOLD - 1

    fail(breaker, 1, code)

    assert breaker.state == "open"
    assert breaker.admit() is None


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.OK,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    ],
)
def test_answers_do_not_count_and_reset_the_count(
    breaker: EndpointBreaker, code: grpc.StatusCode
) -> None:
    fail(breaker, THRESHOLD - 1)

    fail(breaker, THRESHOLD, code)
    assert breaker.failures == 0
    fail(breaker, THRESHOLD - 1)

    assert breaker.state == "closed"
    assert breaker.admit() is not None


def test_retry_after_shrinks_as_the_clock_advances(
    breaker: EndpointBreaker, clock: FakeClock
) -> None:
    open_breaker(breaker)

    first = breaker.retry_after()
    clock.advance(4)
    second = breaker.retry_after()

    assert first == pytest.approx(RESET, abs=1.0)
    assert second == pytest.approx(first - 4, abs=0.01)
    assert breaker.admit() is None


def test_after_reset_timeout_exactly_one_trial_is_admitted(
    breaker: EndpointBreaker, clock: FakeClock
) -> None:
    open_breaker(breaker)
    clock.advance(RESET + 1)

    assert breaker.retry_after() == 0.0
    trial = breaker.admit()
    second = breaker.admit()

    assert trial is not None
    assert trial.trial
    assert breaker.state == "half-open"
    assert second is None


def test_a_successful_trial_closes_it(breaker: EndpointBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(RESET + 1)
    trial = breaker.admit()
    assert trial is not None

    breaker.record(trial, grpc.StatusCode.OK)

    assert breaker.state == "closed"
    assert breaker.failures == 0
    first, second = breaker.admit(), breaker.admit()
    assert first is not None
    assert second is not None
    assert not first.trial


def test_a_trial_answered_with_a_business_code_closes_it(
    breaker: EndpointBreaker, clock: FakeClock
) -> None:
    open_breaker(breaker)
    clock.advance(RESET + 1)
    trial = breaker.admit()
    assert trial is not None

    breaker.record(trial, grpc.StatusCode.NOT_FOUND)

    assert breaker.state == "closed"


def test_a_failed_trial_opens_it_again(breaker: EndpointBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(RESET + 1)
    trial = breaker.admit()
    assert trial is not None

    breaker.record(trial, UNAVAILABLE)

    assert breaker.state == "open"
    assert breaker.admit() is None
    assert breaker.retry_after() > RESET - 1
    clock.advance(RESET + 1)
    again = breaker.admit()
    assert again is not None
    assert again.trial


def test_abandoning_the_trial_frees_the_slot(breaker: EndpointBreaker, clock: FakeClock) -> None:
    open_breaker(breaker)
    clock.advance(RESET + 1)
    trial = breaker.admit()
    assert trial is not None
    assert breaker.admit() is None

    breaker.abandon(trial)

    assert breaker.state == "half-open"
    replacement = breaker.admit()
    assert replacement is not None
    assert replacement.trial
    assert breaker.admit() is None


def test_abandoning_a_normal_call_changes_nothing(breaker: EndpointBreaker) -> None:
    fail(breaker, THRESHOLD - 1)
    admission = breaker.admit()
    assert admission is not None

    breaker.abandon(admission)

    assert breaker.failures == THRESHOLD - 1
    assert breaker.state == "closed"


@pytest.mark.parametrize("code", [UNAVAILABLE, grpc.StatusCode.OK])
def test_a_late_result_of_a_call_admitted_before_opening_changes_nothing(
    code: grpc.StatusCode, clock: FakeClock
) -> None:
    seen: list[str] = []
    breaker = EndpointBreaker(
        "e",
        BreakerPolicy(failure_threshold=1, reset_timeout=0.01),
        clock=clock,
        on_state_change=lambda _, state: seen.append(state),
    )
    early, opener = breaker.admit(), breaker.admit()
    assert early is not None
    assert opener is not None
    breaker.record(opener, UNAVAILABLE)
    clock.advance(1)  # past reset_timeout: a trial would now be due

    breaker.record(early, code)

    assert breaker.state == "open"
    assert seen == ["open"]


def test_state_changes_are_reported(
    breaker: EndpointBreaker, clock: FakeClock, changes: list[tuple[str, str]]
) -> None:
    open_breaker(breaker)
    clock.advance(RESET + 1)
    trial = breaker.admit()
    assert trial is not None
    breaker.record(trial, UNAVAILABLE)
    clock.advance(RESET + 1)
    trial = breaker.admit()
    assert trial is not None
    breaker.record(trial, grpc.StatusCode.OK)

    assert changes == [
        ("inventory-1", "open"),
        ("inventory-1", "half-open"),
        ("inventory-1", "open"),
        ("inventory-1", "half-open"),
        ("inventory-1", "closed"),
    ]


def test_no_state_change_is_reported_while_closed(
    breaker: EndpointBreaker, changes: list[tuple[str, str]]
) -> None:
    fail(breaker, THRESHOLD - 1)
    fail(breaker, 2, grpc.StatusCode.OK)

    assert changes == []
