"""Version weights on the proxyless data plane: which version of a service a call goes to.

A service that runs several versions splits its calls by weight (`policy.weights` in
mesh.yaml, or the live split `meshctl traffic` writes to etcd, which wins). The split
is nginx's smooth weighted round-robin: deterministic, so over any `sum(weights)` calls
each version gets exactly its weight's share (90/10: exactly 10 calls of 100), spread
out evenly rather than in bursts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

__all__ = ["SmoothWeighted", "WeightsOf", "service_weights"]

_T = TypeVar("_T")

WeightsOf = Callable[[], Mapping[str, int]]
"""A service's current weight per version; empty when it has no split (every endpoint
then gets an equal share, whatever its version)."""


class SmoothWeighted(Generic[_T]):
    """nginx's smooth weighted round-robin over `choices` (each with a weight > 0).

    Each turn every choice gains its weight; the one with the most is chosen and pays
    back the total. So 5/1/1 goes a a b a c a a, and any `total` turns in a row give
    each choice exactly its weight in turns.
    """

    __slots__ = ("_choices", "_current", "_total", "_weights")

    def __init__(self, choices: Sequence[tuple[_T, int]]) -> None:
        if not choices or any(weight <= 0 for _, weight in choices):
            raise ValueError("smooth weighted round-robin needs choices with weights > 0")
        self._choices = [choice for choice, _ in choices]
        self._weights = [weight for _, weight in choices]
        self._current = [0] * len(choices)
        self._total = sum(self._weights)

    def next(self) -> _T:
        if len(self._choices) == 1:
            return self._choices[0]
        current, weights = self._current, self._weights
        best = 0
        for index, weight in enumerate(weights):
            current[index] += weight
            if current[index] > current[best]:
                best = index
        current[best] -= self._total
        return self._choices[best]


def service_weights(
    declared: Mapping[str, int] | None, live: Callable[[], Mapping[str, int] | None] | None
) -> WeightsOf | None:
    """The weights provider of one service: its live split when there is one, else its
    declared `policy.weights`; a version either leaves out gets 0. None when the service
    has neither (nor can get a live one): its channel then balances over every endpoint
    alike, with no per-call look-up at all."""
    fixed: Mapping[str, int] = dict(declared or {})
    if live is None:
        return (lambda: fixed) if fixed else None
    follow = live  # bound here: mypy does not narrow `live` inside the closure

    def current() -> Mapping[str, int]:
        return follow() or fixed

    return current
