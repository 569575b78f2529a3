"""mesh.backoff.Backoff: exponential growth, the cap, and jitter bounds."""

from __future__ import annotations

import random

import pytest

from mesh.backoff import Backoff


def test_without_jitter_delays_grow_by_the_multiplier() -> None:
    backoff = Backoff(initial=0.1, maximum=100.0, multiplier=3.0, jitter=0.0)

    delays = [backoff.delay(attempt) for attempt in range(4)]

    assert delays == pytest.approx([0.1, 0.3, 0.9, 2.7])


def test_delays_are_capped_at_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=2.0, multiplier=2.0, jitter=0.0)

    delays = [backoff.delay(attempt) for attempt in range(6)]

    assert delays == pytest.approx([0.5, 1.0, 2.0, 2.0, 2.0, 2.0])


def test_a_negative_attempt_counts_as_the_first() -> None:
    backoff = Backoff(initial=0.5, maximum=2.0, jitter=0.0)

    assert backoff.delay(-3) == pytest.approx(0.5)


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10])
def test_jitter_stays_within_its_fraction(attempt: int) -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, jitter=0.25, rng=random.Random(7))
    base = min(1.0, 0.1 * 2.0**attempt)

    delays = [backoff.delay(attempt) for _ in range(500)]

    assert all(base * 0.75 <= d <= base * 1.25 for d in delays)
    # The spread is used, not a constant offset.
    assert min(delays) < base * 0.9
    assert max(delays) > base * 1.1


def test_the_same_seed_gives_the_same_delays() -> None:
    first = Backoff(initial=0.1, maximum=1.0, rng=random.Random(42))
    second = Backoff(initial=0.1, maximum=1.0, rng=random.Random(42))

    assert [first.delay(n) for n in range(8)] == [second.delay(n) for n in range(8)]


@pytest.mark.parametrize("jitter", [1.0, 1.5, 3.0])
def test_delays_are_never_negative(jitter: float) -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, jitter=jitter, rng=random.Random(1))

    delays = [backoff.delay(n % 4) for n in range(1000)]

    assert min(delays) >= 0.0
    assert max(delays) > 0.0


def test_a_huge_attempt_count_does_not_overflow() -> None:
    # Retry loops count without end while a dependency is down (~17 min to 2 ** 1024).
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.0)
    assert backoff.delay(5000) == 1.0
