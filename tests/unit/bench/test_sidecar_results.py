"""bench.sidecar_results: the sidecar rows, the calls/s ratio, the p50 added, the
Envoys' CPU per call and the goals; and the "sidecar" part of `--json`."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bench.sidecar_results import P50_ADDED_GOAL_MS, RATIO_GOAL, low_load_slots
from bench.summary import (
    GoalJson,
    PropagationJson,
    SidecarJson,
    SidecarRowJson,
    SidecarSettingsJson,
)
from tests.unit.bench.factories import PINNED, SETTINGS, five_subjects, make_checks
from tests.unit.bench.sidecar_factories import level, make_propagation, make_run, make_sidecar


def test_low_load_is_sixteen_calls_in_flight_over_the_load_processes() -> None:
    assert low_load_slots(2) == 8
    assert low_load_slots(3) == 5  # 15 in all: the closest below
    assert low_load_slots(32) == 1  # never none


def test_the_sidecar_part_has_every_key_its_types_declare_in_order() -> None:
    sidecar = make_sidecar()

    assert list(sidecar) == list(SidecarJson.__annotations__)
    assert list(sidecar["settings"]) == list(SidecarSettingsJson.__annotations__)
    assert list(sidecar["propagation"]) == list(PropagationJson.__annotations__)
    for row in sidecar["rows"]:
        assert list(row) == list(SidecarRowJson.__annotations__)
    for goal in sidecar["goals"]:
        assert list(goal) == list(GoalJson.__annotations__)


def test_rows_come_in_pairs_per_load_proxyless_first() -> None:
    sidecar = make_sidecar()

    assert [(r["row"], r["in_flight"]) for r in sidecar["rows"]] == [
        (6, 64), (7, 64), (8, 16), (9, 16), (10, 2), (11, 2),
    ]  # fmt: skip
    assert sidecar["settings"]["in_flight"] == [64, 16, 2]
    assert sidecar["settings"]["order_each_round"][:2] == [
        "proxyless mTLS, 64 in flight",
        "through two sidecars, 64 in flight",
    ]


def test_the_ratio_is_sidecars_over_proxyless_per_round() -> None:
    r = make_sidecar()["ratio"]

    assert r["rows"] == "7/6"
    assert r["calls_per_s_per_round"] == pytest.approx([0.8, 2 / 3])
    assert r["calls_per_s_median"] == pytest.approx(0.7333, abs=1e-4)


def test_the_envoys_cpu_per_call_is_both_envoys_at_the_runs_load() -> None:
    sidecar = make_sidecar()
    through = sidecar["rows"][1]

    # Each Envoy 0.4 s a second, at 2,200 calls/s.
    assert through["inbound_envoy_cpu_us_per_call"] == pytest.approx(0.4 / 2200 * 1e6)
    assert through["caller_envoy_cpu_us_per_call"] == pytest.approx(0.4 / 2200 * 1e6)
    assert sidecar["envoy_cpu_us_per_call"] == pytest.approx(0.8 / 2200 * 1e6)
    assert through["inbound_envoy_switches_per_call"] == 1.0
    assert sidecar["rows"][0]["app_cpu_us_per_call"] == pytest.approx(300.0)
    assert sidecar["rows"][0]["inbound_envoy_cpu_us_per_call"] == 0.0


def test_the_p50_added_is_at_low_load_and_at_light_load_apart() -> None:
    sidecar = make_sidecar()

    assert sidecar["p50_added_ms"] == pytest.approx(0.5)
    assert sidecar["p50_added_ms_per_round"] == pytest.approx([0.5, 0.5])
    assert sidecar["p50_added_light_load_ms"] == pytest.approx(0.4)


def test_the_goals_and_whether_each_is_met() -> None:
    goals = make_sidecar()["goals"]

    assert [(g["comparison"], g["bound"], g["met"]) for g in goals] == [
        (">=", RATIO_GOAL, True),
        ("<=", P50_ADDED_GOAL_MS, True),
        ("<=", 50.0, True),
        ("<=", 200.0, True),
    ]
    assert goals[0]["figure"].startswith("calls/s through two sidecars / proxyless at 64")


def test_goals_are_missed_past_their_bounds() -> None:
    run = make_run()
    slow = level(6, 64, [(3000, 0.02)] * 2, [(2000, 0.03)] * 2)  # ratio 0.667
    late = make_propagation([20.0, 60.0, 70.0])  # median 60 ms
    sidecar = make_sidecar(type(run)(slow, run.low, run.light), late)

    assert [g["met"] for g in sidecar["goals"]] == [False, True, False, True]


def test_a_nan_figure_meets_no_goal() -> None:
    run = make_run()
    empty = level(6, 64, [(3000, 0.02)] * 2, [(2000, 0.03)] * 2)
    # A round without proxyless calls has no ratio, so neither has the median.
    empty.proxyless.windows[0] = replace(empty.proxyless.windows[0], calls=0)

    goals = make_sidecar(type(run)(empty, run.low, run.light))["goals"]

    assert math.isnan(goals[0]["value"])
    assert goals[0]["met"] is False


def test_the_summary_holds_the_sidecar_part_and_survives_json() -> None:
    from bench.driver import summarize

    sidecar = make_sidecar()
    summary = summarize(five_subjects(), SETTINGS, PINNED, make_checks(), sidecar)

    assert summary["sidecar"] is sidecar
    assert json.loads(json.dumps(summary))["sidecar"]["p50_added_ms"] == pytest.approx(0.5)


def test_without_the_sidecar_part_the_key_is_null() -> None:
    from bench.driver import summarize

    summary = summarize(five_subjects(), SETTINGS, PINNED, make_checks())

    assert summary["sidecar"] is None
