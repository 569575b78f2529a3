"""The supervisor's restart backoff (mesh.supervisor._restart) on an injected clock:
doubling delays, the cap, CRASHLOOP after repeated crashes, and the reset after a
stable run."""

from __future__ import annotations

import pytest

from mesh.supervisor._restart import CRASHLOOP, RESTARTING, CrashTracker, RestartPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = RestartPolicy(initial=1.0, maximum=30.0, stable_after=10.0)


def test_the_documented_defaults() -> None:
    assert RestartPolicy() == POLICY


def test_delays_double_with_each_crash_in_a_row_up_to_the_cap() -> None:
    tracker = CrashTracker(POLICY, Clock())

    delays = [tracker.crashed() for _ in range(7)]

    assert delays == pytest.approx([1, 2, 4, 8, 16, 30, 30])


def test_a_first_crash_is_restarting_and_a_repeated_one_a_crash_loop() -> None:
    tracker = CrashTracker(POLICY, Clock())

    tracker.crashed()
    first = tracker.waiting_state
    tracker.crashed()

    assert (first, tracker.waiting_state) == (RESTARTING, CRASHLOOP)


def test_ready_for_less_than_stable_after_keeps_counting() -> None:
    clock = Clock()
    tracker = CrashTracker(POLICY, clock)
    tracker.crashed()

    tracker.ready()
    clock.now += 9.9

    assert tracker.crashed() == pytest.approx(2.0)
    assert tracker.waiting_state == CRASHLOOP


def test_a_stable_run_starts_the_count_again() -> None:
    clock = Clock()
    tracker = CrashTracker(POLICY, clock)
    for _ in range(4):
        tracker.crashed()

    tracker.ready()
    clock.now += 10.0

    assert tracker.crashed() == pytest.approx(1.0)
    assert tracker.waiting_state == RESTARTING


def test_time_since_a_previous_ready_does_not_count_after_a_crash() -> None:
    """Stable means ready since the last start: a crash forgets the earlier ready."""
    clock = Clock()
    tracker = CrashTracker(POLICY, clock)
    tracker.ready()
    tracker.crashed()  # at once: one crash in a row
    clock.now += 60.0  # waiting, then starting again without becoming ready

    assert tracker.crashed() == pytest.approx(2.0)
