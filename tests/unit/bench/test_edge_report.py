"""bench.edge_results and bench.edge_report: the edge part's figures, goals and lines,
from hand-made rows."""

from __future__ import annotations

import math

import pytest

from bench.edge_report import (
    edge_ratio_line,
    edge_row_line,
    edge_warning_lines,
    json_case_line,
    print_edge_report,
)
from bench.edge_results import CALLS_GOAL, P99_GOAL, edge_goals, p99_over
from bench.summary import EdgeJson, EdgeRowJson
from tests.unit.bench.edge_factories import make_cases, make_edge, make_subjects
from tests.unit.bench.factories import PINNED, UNPINNED, make_subject


def _row(edge: EdgeJson, number: int) -> EdgeRowJson:
    return next(row for row in edge["rows"] if row["row"] == number)


def test_each_row_splits_the_server_side_into_front_and_backend() -> None:
    edge = make_edge()
    direct, envoy, gateway = (_row(edge, n) for n in (1, 2, 3))

    # The edge: 0.5 s of its own and 0.5 s of the backend's a second, at 1,550 calls/s.
    assert gateway["front_cpu_us_per_call"] == pytest.approx(322.58, abs=0.01)
    assert gateway["backend_cpu_us_per_call"] == pytest.approx(322.58, abs=0.01)
    assert gateway["server_side_cpu_us_per_call"] == pytest.approx(645.16, abs=0.01)
    # Direct gRPC: the backend is the front, counted once.
    assert direct["front_cpu_us_per_call"] == direct["backend_cpu_us_per_call"] == 300
    assert direct["server_side_cpu_us_per_call"] == pytest.approx(300)
    # Only a Python front has an asyncio loop to be idle.
    assert envoy["front_loop_thread_idle_pct"] is None
    assert gateway["front_loop_thread_idle_pct"] == pytest.approx(2.0)
    assert gateway["p50_ms"] == pytest.approx(6.0)
    assert gateway["p99_ms"] == pytest.approx(60.0)
    assert gateway["p99_ms_per_round"] == pytest.approx([60.0, 60.0])
    assert gateway["load_cpu_pct"] == pytest.approx(10.0)


def test_the_ratios_pair_the_edge_with_envoy_direct_grpc_and_the_candidates() -> None:
    edge = make_edge()

    assert {key: r["rows"] for key, r in edge["ratios"].items()} == {
        "edge_vs_envoy": "3/2",
        "edge_vs_direct_grpc": "3/1",
        "envoy_vs_direct_grpc": "2/1",
        "aiohttp_vs_edge": "4/3",
        "uvicorn_vs_edge": "5/3",
    }
    calls = edge["ratios"]["edge_vs_envoy"]
    assert calls["calls_per_s_per_round"] == pytest.approx([1600 / 1500, 1.0])
    assert calls["calls_per_s_median"] == pytest.approx(1.0333, abs=1e-4)
    assert edge["p99_edge_over_envoy"] == pytest.approx(1.2)
    assert edge["p99_edge_over_envoy_per_round"] == pytest.approx([1.2, 1.2])


def test_without_candidates_there_are_only_the_three_main_ratios() -> None:
    edge = make_edge(make_subjects(candidates=False))

    assert list(edge["ratios"]) == ["edge_vs_envoy", "edge_vs_direct_grpc", "envoy_vs_direct_grpc"]
    assert len(edge["rows"]) == 3


def test_the_goals_are_met_at_their_bounds_and_not_past_them() -> None:
    met = make_edge()["goals"]
    assert [goal["met"] for goal in met] == [True, True]
    assert [(goal["comparison"], goal["bound"]) for goal in met] == [
        (">=", CALLS_GOAL),
        ("<=", P99_GOAL),
    ]

    slow = make_subjects(edge=((1100, 0.08), (1150, 0.08)))
    missed = make_edge(slow)["goals"]

    assert [goal["met"] for goal in missed] == [False, False]
    assert missed[0]["value"] == pytest.approx(0.75)
    assert missed[1]["value"] == pytest.approx(1.6)


def test_a_goal_without_figures_is_not_met() -> None:
    nothing = make_subject()  # no windows: no ratio, no p99

    goals = edge_goals(nothing, nothing)

    assert all(math.isnan(goal["value"]) for goal in goals)
    assert not any(goal["met"] for goal in goals)
    assert math.isnan(p99_over(nothing, nothing))


def test_a_row_line() -> None:
    edge = make_edge()

    assert edge_row_line(_row(edge, 2), (0, 1)) == (
        f"2  {'Envoy grpc_json_transcoder':<38} {'HTTP/1.1 keep-alive, 64 connections':<36} "
        "   1,500     5.0    50.0      0      300      367      667      -      10       15"
        "      100"
    )
    assert edge_row_line(_row(edge, 3), (0, 1)).split()[-5:] == ["645", "2", "10", "15", "100"]


def test_a_ratio_line_shows_latency_and_cpu_as_subject_over_baseline() -> None:
    edge = make_edge()

    line = edge_ratio_line(
        "the edge vs Envoy", edge["ratios"]["edge_vs_envoy"], _row(edge, 3), _row(edge, 2)
    )

    assert line == (
        f"  3/2  {'the edge vs Envoy':<44}   1.033  1.000-1.067   1.033  1.200  1.200     0.968"
    )


def test_a_json_case_line() -> None:
    encode, _ = make_cases()

    assert json_case_line(encode) == (
        "  GetProductResponse     encode    251     10.0     14.0   1.40         9.6     0.20"
        "     4.00  20.00"
    )
    assert json_case_line({**encode, "same_result": False}).endswith("NOT THE SAME RESULT")


def test_no_warning_for_a_quiet_run() -> None:
    assert edge_warning_lines(make_edge(), PINNED) == []


def test_warnings_name_a_server_core_that_was_not_full_and_other_work() -> None:
    edge = make_edge(make_subjects(server_core=0.8, other=0.3))

    lines = edge_warning_lines(edge, PINNED)

    assert (
        "WARNING: the server core was only 80% busy during 'the edge (python -m gateway)': it "
        "was not the limit"
    ) in lines
    assert (
        "WARNING: other processes used 30% of a core during 'Envoy grpc_json_transcoder': its "
        "figures are likely disturbed"
    ) in lines
    # Not pinned, there is no server core or load core to judge.
    assert not any("core was" in line for line in edge_warning_lines(edge, UNPINNED))


def test_the_report_prints_rows_ratios_candidates_and_goals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_edge_report(make_edge(make_subjects(candidates=False)), PINNED)

    out = capsys.readouterr().out
    assert "Edge rows: HTTP/JSON GET /v1/products/sku-1 -> gRPC GetProduct; 3 subjects" in out
    assert "Versions: envoy 1.40.0, h2load 1.52.0" in out
    assert "checked at the end: 26 threads of 2 processes, every one on its planned core" in out
    assert "the same JSON" in out
    assert "  aiohttp: not installed" in out
    assert "  GetProductResponse     encode" in out
    assert out.rstrip().endswith("pooled over rounds <= 1.5: 1.200 -> MET")


def test_the_report_says_when_envoy_and_the_edge_answer_differently(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_edge_report(make_edge(same_json=False), PINNED)

    assert "DIFFERENT JSON" in capsys.readouterr().out


def test_threads_off_their_core_are_warned_of() -> None:
    edge = make_edge()
    edge["placement_check"]["edge"]["threads_elsewhere"] = 2

    assert edge_warning_lines(edge, PINNED) == [
        "WARNING: 2 of the 14 threads of edge (pid 43) may run off core 1"
    ]


def test_a_candidate_servers_failures_are_warned_of_and_do_not_fail_the_run() -> None:
    from bench.driver import _edge_errors

    edge = make_edge()
    edge["rows"][3]["errors"] = 1
    edge["rows"][3]["error_samples"] = ["HTTP 0: 1 answers"]

    assert edge_warning_lines(edge, PINNED) == [
        "WARNING: 1 calls failed on 'the edge on aiohttp's low-level server' (HTTP 0: 1 "
        "answers): a candidate server's failures do not fail the run"
    ]
    assert _edge_errors(edge) == 0
    edge["rows"][2]["errors"] = 2
    assert _edge_errors(edge) == 2
    assert _edge_errors(None) == 0
