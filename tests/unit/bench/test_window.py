"""bench.load's figures of one window: nearest-rank percentiles, CPU percentages, idle time."""

from __future__ import annotations

import math

import pytest

from bench.load import idle_percent, percent_of_core, percentile
from bench.summary import WindowJson
from tests.unit.bench.factories import make_window


@pytest.mark.parametrize(
    ("quantile", "expected"),
    [(0.0, 1.0), (0.2, 1.0), (0.21, 2.0), (0.5, 3.0), (0.9, 5.0), (0.99, 5.0), (1.0, 5.0)],
)
def test_percentile_is_the_nearest_rank_of_an_odd_count(quantile: float, expected: float) -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], quantile) == expected


def test_the_median_of_an_even_count_is_the_lower_middle_value_not_a_mean() -> None:
    # Nearest rank: ceil(0.5 * 4) = 2nd value; a latency that was measured.
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


def test_percentiles_of_a_hundred_values_pick_that_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]

    assert [percentile(ordered, q) for q in (0.5, 0.9, 0.99)] == [50.0, 90.0, 99.0]


def test_one_value_is_every_percentile() -> None:
    assert {percentile([7.0], q) for q in (0.0, 0.5, 0.99, 1.0)} == {7.0}


def test_ties_give_the_tied_value() -> None:
    assert percentile([1.0, 2.0, 2.0, 2.0, 9.0], 0.5) == 2.0


def test_no_values_have_no_percentile() -> None:
    assert math.isnan(percentile([], 0.5))


def test_percent_of_core_is_cpu_seconds_over_wall_seconds() -> None:
    assert percent_of_core(0.5, 2.0) == 25.0
    assert percent_of_core(3.0, 2.0) == 150.0  # several threads, or cores
    assert percent_of_core(0.0, 2.0) == 0.0


@pytest.mark.parametrize("elapsed", [0.0, -1.0])
def test_percent_of_core_without_elapsed_time_is_nan(elapsed: float) -> None:
    assert math.isnan(percent_of_core(1.0, elapsed))


def test_idle_is_what_running_and_waiting_leave_of_the_time() -> None:
    assert idle_percent(96.0) == 4.0
    assert idle_percent(0.0) == 100.0


def test_idle_is_never_negative() -> None:
    # The /proc snapshots bracket the window to a few ms: busy may read over 100%.
    assert idle_percent(100.4) == 0.0


def test_idle_of_an_unknown_busy_share_is_unknown_not_zero() -> None:
    # max(0, nan) would have read 0: a saturated server.
    assert math.isnan(idle_percent(math.nan))


def test_calls_per_second_are_calls_over_the_scheduled_duration() -> None:
    window = make_window(calls=3000, duration=2.0, elapsed=2.004)

    assert window.calls_per_second == 1500.0


def test_a_window_without_duration_has_no_calls_per_second() -> None:
    assert make_window(calls=10, duration=0.0, elapsed=1.0).calls_per_second == 0.0


def test_other_cpu_is_the_machine_minus_every_process_of_the_benchmark() -> None:
    window = make_window(
        server_cpu=0.9, client_cpu=[0.4, 0.3], driver_cpu=0.1, background_cpu=0.1, machine_cpu=2.0
    )

    assert window.other_cpu == pytest.approx(0.2)


def test_other_cpu_is_never_negative() -> None:
    # Each figure is read at a slightly different moment: ours may add up past the machine's.
    window = make_window(server_cpu=1.0, client_cpu=[0.5], machine_cpu=1.4)

    assert window.other_cpu == 0.0


def test_server_loop_idle_is_the_time_its_thread_neither_ran_nor_waited() -> None:
    window = make_window(duration=2.0, loop_ran=1.2, loop_waited=0.6)

    assert window.server_loop_idle_pct == pytest.approx(10.0)


def test_a_window_as_json() -> None:
    window = make_window(
        calls=400,
        duration=2.0,
        elapsed=2.0,
        latencies=[0.004, 0.001, 0.003, 0.002],
        errors=1,
        server_cpu=1.9,
        loop_ran=1.4,
        loop_waited=0.5,
        client_cpu=[0.6, 0.8],
        driver_cpu=0.02,
        background_cpu=0.04,
        machine_cpu=3.4,
        core_cpu={0: 1.6, 1: 1.9},
    )

    figures: dict[str, object] = dict(window.as_json())
    core_busy = figures.pop("core_busy_pct")  # approx compares flat dicts only

    assert core_busy == pytest.approx({"0": 80.0, "1": 95.0})
    assert figures == pytest.approx(
        {
            "calls_per_s": 200.0,
            "calls": 400,
            "errors": 1,
            "p50_ms": 2.0,  # sorted first: the latencies arrive in no order
            "p99_ms": 4.0,
            "server_cpu_pct": 95.0,
            "server_loop_thread_ran_pct": 70.0,
            "server_loop_thread_waited_for_cpu_pct": 25.0,
            "server_loop_thread_idle_pct": 5.0,
            "client_cpu_pct": 70.0,
            "driver_cpu_pct": 1.0,
            "idle_servers_and_etcd_cpu_pct": 2.0,
            "other_cpu_pct": 2.0,
        }
    )


def test_a_window_as_json_has_the_keys_its_type_declares_in_order() -> None:
    assert list(make_window().as_json()) == list(WindowJson.__annotations__)


def test_a_window_without_calls_has_no_latency() -> None:
    figures = make_window(calls=0).as_json()

    assert math.isnan(figures["p50_ms"])
    assert math.isnan(figures["p99_ms"])
    assert figures["calls_per_s"] == 0.0
