"""mesh.client's version weights: smooth weighted round-robin, and where a service's
weights come from (live split, else declared, else none)."""

from __future__ import annotations

from collections import Counter

import pytest

from mesh.client import SmoothWeighted, service_weights


def turns(split: SmoothWeighted[str], count: int) -> list[str]:
    return [split.next() for _ in range(count)]


def test_ninety_ten_gives_exactly_ten_of_a_hundred() -> None:
    split = SmoothWeighted([("v1", 90), ("v2", 10)])

    assert Counter(turns(split, 100)) == {"v1": 90, "v2": 10}


def test_the_turns_are_spread_out_as_nginx_spreads_them() -> None:
    split = SmoothWeighted([("a", 5), ("b", 1), ("c", 1)])

    assert turns(split, 7) == ["a", "a", "b", "a", "c", "a", "a"]


@pytest.mark.parametrize("weights", [(1, 1), (80, 20), (33, 67), (3, 2, 5)])
def test_any_total_turns_in_a_row_give_each_choice_its_weight(weights: tuple[int, ...]) -> None:
    choices = [(f"v{n}", weight) for n, weight in enumerate(weights)]
    split = SmoothWeighted(choices)
    total = sum(weights)

    for _ in range(3):  # every cycle, not only the first
        assert Counter(turns(split, total)) == dict(choices)


def test_a_single_choice_takes_every_turn() -> None:
    assert set(turns(SmoothWeighted([("v2", 100)]), 10)) == {"v2"}


@pytest.mark.parametrize("choices", [[], [("v1", 0)], [("v1", 10), ("v2", -1)]])
def test_choices_need_weights_above_zero(choices: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError, match="weights > 0"):
        SmoothWeighted(choices)


def test_a_live_split_wins_over_the_declared_one() -> None:
    live: dict[str, dict[str, int]] = {}
    weights = service_weights({"v1": 90, "v2": 10}, lambda: live.get("product"))
    assert weights is not None

    assert weights() == {"v1": 90, "v2": 10}
    live["product"] = {"v2": 100}
    assert weights() == {"v2": 100}
    del live["product"]
    assert weights() == {"v1": 90, "v2": 10}


def test_without_a_declaration_a_missing_live_split_means_no_split() -> None:
    weights = service_weights(None, lambda: None)
    assert weights is not None

    assert weights() == {}


def test_a_declaration_alone_is_fixed() -> None:
    weights = service_weights({"v1": 1, "v2": 3}, None)
    assert weights is not None

    assert weights() == {"v1": 1, "v2": 3}


def test_with_neither_there_is_no_provider_at_all() -> None:
    assert service_weights(None, None) is None
    assert service_weights({}, None) is None
