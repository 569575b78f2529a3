"""Exponential backoff with jitter, as pure arithmetic over an injected random source."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number `attempt` (0 for the first retry):
    initial * multiplier**attempt, capped at `maximum`, then spread by +/- `jitter`
    (a fraction) so that clients failing together do not retry together."""

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        # The exponent is capped: retry loops count without end while a dependency is
        # down, and 2.0 ** 1024 overflows a float.
        exponent = min(max(attempt, 0), 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        return max(0.0, base * (1 + self.jitter * self.rng.uniform(-1.0, 1.0)))
