"""bench.sidecar_report: the sidecar part's lines, from hand-made figures."""

from __future__ import annotations

import pytest

from bench.sidecar_report import (
    breakdown_lines,
    goal_line,
    print_sidecar_report,
    propagation_lines,
    sidecar_round_line,
    sidecar_warning_lines,
    sidecar_window_line,
)
from tests.unit.bench.factories import PINNED, UNPINNED
from tests.unit.bench.sidecar_factories import make_propagation, make_run, make_sidecar


def test_a_sidecar_window_line_shows_both_envoys() -> None:
    run = make_run()

    line = sidecar_window_line(1, 2, run.load.sidecar, run.load.sidecar.windows[0])

    assert line == (
        f"round 1/2  7 {'through two sidecars, 64 in flight':<38}  2,400/s  p50  25.0 ms  "
        "p99  25.0 ms  0 errors  CPU: app 60%, Envoys: inbound 40% caller 40%, clients 60%, "
        "other 0%"
    )


def test_the_round_line_shows_the_latest_round() -> None:
    assert sidecar_round_line(2, make_run()) == (
        "round 2 sidecar: calls/s 7/6 0.667; p50 added 0.50 ms at 16, 0.40 ms at 2 in flight"
    )


def test_goal_lines() -> None:
    met, *_ = make_sidecar()["goals"]

    assert goal_line(met) == (
        "  calls/s through two sidecars / proxyless at 64 in flight (rows 7/6), median over "
        "rounds >= 0.7: 0.733 -> MET"
    )
    assert goal_line({**met, "met": False}).endswith("-> NOT MET")


def test_the_breakdown_puts_each_envoy_on_its_apps_side() -> None:
    lines = breakdown_lines(make_sidecar(), PINNED)

    assert lines[0].startswith("Calls/s through two sidecars / proxyless (rows 7/6): median 0.733")
    assert lines[1].startswith("p50 added by the two sidecars at 16 in flight: 0.50 ms")
    assert lines[1].endswith("at 2 in flight 0.40 ms (proxyless 1.00, sidecars 1.40)")
    assert lines[2] == (
        "Envoys' CPU per call at 64 in flight: inbound 182 us + caller 182 us = 364 us"
    )
    # 0.6 s app + 0.4 s Envoy a second at 2,200 calls/s, against 0.9 s at 3,000.
    assert lines[4] == (
        "  server side (core 1): proxyless app 300; sidecar path app 273 + its Envoy 182 = "
        "455 -> if this core is the limit, calls/s ratio 0.660"
    )
    assert lines[5].startswith("  load side (core 0): proxyless client 200 (mTLS)")


def test_unpinned_the_breakdown_names_no_core() -> None:
    lines = breakdown_lines(make_sidecar(), UNPINNED)

    assert lines[4].startswith("  server side: proxyless app 300")


def test_propagation_lines() -> None:
    assert propagation_lines(make_propagation([20.0, 30.0, 40.0]))[1:] == [
        "  median 30.0 ms, max 40.0 ms, 0 missed; first sidecar to show it: median 15.0 ms",
        "  median per sidecar, ms: product-3.envoy 15.0, order-1.envoy 30.0",
        "  CPU per change, ms: control plane 10.0, sidecars (all) 4.0",
    ]


def test_a_sidecar_that_missed_a_change_has_no_median() -> None:
    lines = propagation_lines(make_propagation([20.0, None, 40.0]))

    assert lines[1].startswith("  median 40.0 ms, max inf ms, 1 missed")
    assert lines[2] == "  median per sidecar, ms: product-3.envoy nan, order-1.envoy nan"


def test_a_quiet_sidecar_part_has_no_warnings() -> None:
    assert sidecar_warning_lines(make_sidecar(), PINNED) == []


def test_a_busy_load_core_and_other_work_warn() -> None:
    sidecar = make_sidecar()
    sidecar["rows"][1]["core_busy_pct"]["0"] = 97.0
    sidecar["rows"][3]["other_cpu_pct"] = 20.0

    assert sidecar_warning_lines(sidecar, PINNED) == [
        "WARNING: the load core was 97% busy during 'through two sidecars, 64 in flight': the "
        "client side (load processes, caller's Envoy) may be the limit",
        "WARNING: other processes used 20% of a core during 'through two sidecars, 16 in "
        "flight': its figures are likely disturbed",
    ]


def test_an_idle_server_core_at_the_runs_load_warns() -> None:
    sidecar = make_sidecar()
    sidecar["rows"][0]["core_busy_pct"]["1"] = 80.0
    sidecar["rows"][2]["core_busy_pct"]["1"] = 50.0  # low load: expected

    assert sidecar_warning_lines(sidecar, PINNED) == [
        "WARNING: the server core was only 80% busy during 'proxyless mTLS, 64 in flight': "
        "it was not the limit"
    ]


def test_the_sidecar_report_ends_with_its_goals(capsys: pytest.CaptureFixture[str]) -> None:
    sidecar = make_sidecar()

    print_sidecar_report(sidecar, PINNED)

    lines = capsys.readouterr().out.splitlines()
    assert lines[-5] == "Sidecar goals:"
    assert lines[-4:] == [goal_line(goal) for goal in sidecar["goals"]]
    assert "Placement: product-3 on core 1" in lines
    assert lines[1].startswith("Sidecar data plane: 6 more windows at the end of each of the 2")
    assert any("64 in flight 0.5 + 2 s, 16 in flight 0.25 + 1 s" in line for line in lines)
