"""bench.results.Ratio: per-round calls/s ratios, their median and min-max, the pooled
ratio, and the inverse ratios of latency and CPU per call."""

from __future__ import annotations

import math

import pytest

from bench.results import Ratio, ratio
from bench.summary import RatioJson
from tests.unit.bench.factories import make_subject, make_window, subject_at


def ratio_of(calls_per_round: list[int], *, baseline: list[int]) -> Ratio:
    """Row 3 against row 5, each round one second long."""
    return ratio(subject_at(calls_per_round, row=3), subject_at(baseline, row=5))


def test_each_round_is_subject_over_baseline_in_that_round() -> None:
    r = ratio_of([900, 800], baseline=[1000, 500])

    assert r.per_round == [0.9, 1.6]


def test_the_median_of_an_odd_count_is_the_middle_round() -> None:
    r = ratio_of([900, 800, 1000, 950, 700], baseline=[1000] * 5)

    assert r.median == pytest.approx(0.9)
    assert (r.low, r.high) == pytest.approx((0.7, 1.0))


def test_the_median_of_an_even_count_is_the_mean_of_the_two_middle_rounds() -> None:
    r = ratio_of([1100, 800, 1000, 900], baseline=[1000] * 4)

    assert r.median == pytest.approx(0.95)
    assert (r.low, r.high) == pytest.approx((0.8, 1.1))


def test_one_round_is_its_own_median_min_and_max() -> None:
    r = ratio_of([870], baseline=[1000])

    assert r.median == r.low == r.high == pytest.approx(0.87)


def test_tied_rounds() -> None:
    r = ratio_of([900, 1000, 900], baseline=[1000] * 3)

    assert r.median == pytest.approx(0.9)
    assert r.low == pytest.approx(0.9)


def test_no_rounds_have_no_median_nor_min_max() -> None:
    r = ratio(make_subject(), make_subject())

    assert r.per_round == []
    assert math.isnan(r.median)
    assert math.isnan(r.low)
    assert math.isnan(r.high)


def test_a_subject_that_completed_nothing_in_a_round_scores_zero_there() -> None:
    r = ratio_of([900, 0, 1000], baseline=[1000] * 3)

    assert r.per_round == [0.9, 0.0, 1.0]
    assert r.median == pytest.approx(0.9)
    assert r.low == 0.0


@pytest.mark.parametrize("failed_round", [0, 1, 2])
def test_a_round_whose_baseline_completed_nothing_leaves_the_rounds_statistics_undefined(
    failed_round: int,
) -> None:
    # That round has no ratio. It used to be sorted in as a NaN, which compares neither
    # smaller nor larger: the median and min-max then depended on which round it was,
    # and could read as a met target.
    baseline = [1000, 1000, 1000]
    baseline[failed_round] = 0

    r = ratio_of([1000, 900, 950], baseline=baseline)

    assert math.isnan(r.per_round[failed_round])
    assert not r.every_round_measured
    assert math.isnan(r.median)
    assert math.isnan(r.low)
    assert math.isnan(r.high)


def test_the_pooled_ratio_is_of_the_totals_not_of_the_rounds() -> None:
    # Rounds 1.0 and 0.6, median 0.8; the totals: 400 calls against 600.
    r = ratio_of([100, 300], baseline=[100, 500])

    assert r.median == pytest.approx(0.8)
    assert r.pooled == pytest.approx(400 / 600)


def test_the_pooled_ratio_weighs_each_window_by_its_length() -> None:
    subject = make_subject(
        make_window(calls=100, duration=1.0), make_window(calls=900, duration=3.0)
    )
    baseline = make_subject(
        make_window(calls=200, duration=1.0), make_window(calls=600, duration=3.0)
    )

    # 1000 calls in 4 s against 800 in 4 s.
    assert ratio(subject, baseline).pooled == pytest.approx(1.25)


def test_the_pooled_ratio_against_a_baseline_that_completed_nothing_is_nan() -> None:
    r = ratio_of([900, 900], baseline=[0, 0])

    assert math.isnan(r.pooled)


def test_latency_ratios_are_baseline_over_subject_so_that_higher_is_better() -> None:
    baseline = make_subject(make_window(latencies=[0.010] * 50 + [0.020] * 49 + [0.050]))
    subject = make_subject(make_window(latencies=[0.020] * 50 + [0.040] * 49 + [0.080]))

    r = ratio(subject, baseline)

    assert r.p50_inverse == pytest.approx(0.5)  # 10 ms against 20 ms
    assert r.p99_inverse == pytest.approx(0.5)  # 20 ms against 40 ms: the 99th of 100


def test_latency_ratios_without_subject_calls_are_nan() -> None:
    r = ratio(make_subject(make_window(calls=0)), make_subject(make_window(latencies=[0.01])))

    assert math.isnan(r.p50_inverse)
    assert math.isnan(r.p99_inverse)


def test_cpu_per_call_ratio_is_baseline_over_subject() -> None:
    baseline = make_subject(make_window(calls=1000, server_cpu=1.0))  # 1000 us per call
    subject = make_subject(make_window(calls=800, server_cpu=1.0))  # 1250 us per call

    assert ratio(subject, baseline).server_cpu_per_call_inverse == pytest.approx(0.8)


def test_cpu_per_call_ratio_without_subject_calls_is_nan() -> None:
    baseline = make_subject(make_window(calls=1000, server_cpu=1.0))
    subject = make_subject(make_window(calls=0, server_cpu=1.0))

    assert math.isnan(ratio(subject, baseline).server_cpu_per_call_inverse)


def test_the_label_names_the_subject_row_then_the_baseline_row() -> None:
    assert ratio_of([1000], baseline=[1000]).label == "3/5"


def test_subjects_with_different_round_counts_cannot_be_paired() -> None:
    with pytest.raises(ValueError, match="zip"):
        ratio(subject_at([1000, 1000]), subject_at([1000]))


def test_a_ratio_as_json() -> None:
    r = ratio(
        make_subject(
            make_window(calls=900, latencies=[0.02], server_cpu=0.9), row=3, name="ShopMesh"
        ),
        make_subject(make_window(calls=1000, latencies=[0.01], server_cpu=0.8), row=5, name="bare"),
    )

    figures: dict[str, object] = dict(r.as_json())
    per_round = figures.pop("calls_per_s_per_round")

    assert per_round == pytest.approx([0.9])
    assert figures == pytest.approx(
        {
            "subject": "ShopMesh",
            "baseline": "bare",
            "rows": "3/5",
            "calls_per_s_median": 0.9,
            "calls_per_s_min": 0.9,
            "calls_per_s_max": 0.9,
            "calls_per_s_pooled": 0.9,
            "p50_inverse": 0.5,
            "p99_inverse": 0.5,
            "server_cpu_per_call_inverse": 0.8,  # 800 us against 1000 us per call
        }
    )
    assert list(r.as_json()) == list(RatioJson.__annotations__)
