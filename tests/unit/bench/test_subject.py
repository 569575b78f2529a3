"""bench.results.SubjectResult: a subject's figures pool all its windows."""

from __future__ import annotations

import math

import pytest

from bench.summary import SubjectJson
from tests.unit.bench.factories import make_subject, make_window


def test_calls_per_second_are_all_calls_over_all_measured_time() -> None:
    # Not the mean of the rounds' rates (200 here): a longer window weighs more.
    subject = make_subject(
        make_window(calls=100, duration=1.0), make_window(calls=900, duration=3.0)
    )

    assert subject.calls == 1000
    assert subject.duration == 4.0
    assert subject.calls_per_second == 250.0
    assert subject.per_round == [100.0, 300.0]


def test_a_subject_without_measured_time_has_no_calls_per_second() -> None:
    assert make_subject().calls_per_second == 0.0
    assert make_subject(make_window(calls=5, duration=0.0)).calls_per_second == 0.0


def test_latency_percentiles_are_over_every_call_of_every_round() -> None:
    subject = make_subject(
        make_window(latencies=[0.003, 0.001]), make_window(latencies=[0.004, 0.002])
    )

    assert subject.latencies == [0.001, 0.002, 0.003, 0.004]
    assert subject.latency_ms(0.5) == pytest.approx(2.0)
    assert subject.latency_ms(0.99) == pytest.approx(4.0)


def test_a_subject_without_calls_has_no_latency() -> None:
    assert math.isnan(make_subject(make_window(calls=0)).latency_ms(0.5))


def test_cpu_percent_is_summed_seconds_over_summed_elapsed_time() -> None:
    subject = make_subject(
        make_window(duration=1.0, server_cpu=0.9), make_window(duration=3.0, server_cpu=2.7)
    )

    assert subject.server_cpu == pytest.approx(3.6)
    assert subject.percent(subject.server_cpu) == pytest.approx(90.0)


def test_cpu_percent_without_elapsed_time_is_nan() -> None:
    assert math.isnan(make_subject().percent(1.0))


def test_cpu_per_call_is_cpu_seconds_per_completed_call() -> None:
    subject = make_subject(
        make_window(calls=300, server_cpu=0.75), make_window(calls=500, server_cpu=1.25)
    )

    # 2 CPU seconds over 800 calls.
    assert subject.us_per_call(subject.server_cpu) == pytest.approx(2500.0)


def test_cpu_per_call_is_over_the_cpu_windows_when_they_outlast_the_schedule() -> None:
    # The /proc snapshots bracket the scheduled second: CPU rate times seconds per call.
    subject = make_subject(make_window(calls=1000, duration=1.0, elapsed=1.25, server_cpu=1.0))

    assert subject.us_per_call(subject.server_cpu) == pytest.approx(800.0)


def test_cpu_per_call_without_calls_is_nan() -> None:
    subject = make_subject(make_window(calls=0, server_cpu=1.0))

    assert math.isnan(subject.us_per_call(subject.server_cpu))


def test_client_cpu_is_summed_per_load_process() -> None:
    subject = make_subject(make_window(client_cpu=[0.1, 0.2]), make_window(client_cpu=[0.3, 0.4]))

    assert subject.client_cpu == pytest.approx([0.4, 0.6])


def test_a_core_missing_from_a_window_counts_as_idle_there() -> None:
    subject = make_subject(make_window(core_cpu={0: 0.5, 1: 0.75}), make_window(core_cpu={1: 0.25}))

    assert subject.core_cpu(0) == 0.5
    assert subject.core_cpu(1) == 1.0
    assert subject.core_cpu(7) == 0.0


def test_errors_add_up_and_at_most_five_samples_are_kept_in_round_order() -> None:
    subject = make_subject(
        make_window(errors=4, error_samples=["a", "b", "c"]),
        make_window(errors=3, error_samples=["d", "e", "f"]),
    )

    assert subject.errors == 7
    assert subject.error_samples == ["a", "b", "c", "d", "e"]


def test_a_subject_as_json() -> None:
    subject = make_subject(
        make_window(
            calls=300,
            duration=1.0,
            latencies=[0.010, 0.020, 0.030],
            server_cpu=0.9,
            loop_ran=0.6,
            loop_waited=0.3,
            client_cpu=[0.3, 0.4],
            driver_cpu=0.01,
            background_cpu=0.02,
            machine_cpu=1.7,
            core_cpu={0: 0.8, 1: 0.9},
        ),
        make_window(
            calls=500,
            duration=1.0,
            latencies=[0.040],
            server_cpu=1.1,
            loop_ran=0.9,
            loop_waited=0.2,
            client_cpu=[0.5, 0.4],
            driver_cpu=0.01,
            background_cpu=0.0,
            machine_cpu=2.1,
            core_cpu={0: 1.0, 1: 1.0},
        ),
        row=3,
        name="ShopMesh",
    )

    figures: dict[str, object] = dict(subject.as_json([0, 1]))
    # approx compares flat mappings only: the lists and dicts are checked one by one.
    nested = [
        "calls_per_s_per_round",
        "client_cpu_pct_per_worker",
        "core_busy_pct",
        "error_samples",
        "windows",
    ]
    per_round, per_worker, core_busy, samples, windows = (figures.pop(key) for key in nested)

    assert figures == pytest.approx(
        {
            "row": 3,
            "name": "ShopMesh",
            "detail": "detail",
            "calls": 800,
            "measured_s": 2.0,
            "calls_per_s": 400.0,
            "p50_ms": 20.0,
            "p90_ms": 40.0,
            "p99_ms": 40.0,
            "max_ms": 40.0,
            "errors": 0,
            "server_cpu_pct": 100.0,
            "server_loop_thread_ran_pct": 75.0,
            "server_loop_thread_waited_for_cpu_pct": 25.0,
            "server_loop_thread_idle_pct": 0.0,
            "server_cpu_us_per_call": 2500.0,
            "client_cpu_pct": 80.0,
            "client_cpu_us_per_call": 2000.0,
            "driver_cpu_pct": 1.0,
            "idle_servers_and_etcd_cpu_pct": 1.0,
            "machine_cpu_pct": 190.0,
            "other_cpu_pct": 8.0,  # 0.07 + 0.09 s of work not the benchmark's, over 2 s
        }
    )
    assert per_round == [300.0, 500.0]
    assert per_worker == pytest.approx([40.0, 40.0])
    assert core_busy == pytest.approx({"0": 90.0, "1": 95.0})
    assert samples == []
    assert windows == [w.as_json() for w in subject.windows]


def test_a_subject_as_json_has_the_keys_its_type_declares_in_order() -> None:
    assert list(make_subject(make_window()).as_json([0])) == list(SubjectJson.__annotations__)


def test_a_subject_without_calls_has_no_slowest_call() -> None:
    assert make_subject(make_window(calls=0)).as_json([])["max_ms"] is None


def test_a_saturated_server_loop_reads_zero_idle_not_negative() -> None:
    subject = make_subject(make_window(duration=1.0, loop_ran=0.7, loop_waited=0.32))

    assert subject.as_json([])["server_loop_thread_idle_pct"] == 0.0
