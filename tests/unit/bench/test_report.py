"""bench.report: the lines the benchmark prints, from hand-made figures."""

from __future__ import annotations

import pytest

from bench.report import (
    min_max,
    placement_check_line,
    print_report,
    ratio_line,
    round_ratios_line,
    rows_of,
    target_line,
    trace_share_pct,
    warning_lines,
    window_line,
)
from bench.results import ratio
from bench.summary import Summary
from tests.unit.bench.factories import (
    PINNED,
    UNPINNED,
    five_subjects,
    make_checks,
    make_subject,
    make_summary,
    quiet_window,
    subject_at,
)


def test_min_max_has_three_decimals() -> None:
    assert min_max(0.8647, 0.97439) == "0.865-0.974"


def test_rows_of_a_ratio() -> None:
    r = ratio(subject_at([900], row=3), subject_at([1000], row=5)).as_json()

    assert rows_of(r) == (3, 5)


def test_trace_share_is_spans_in_percent_of_calls() -> None:
    assert trace_share_pct(803, 80_300) == pytest.approx(1.0)
    assert trace_share_pct(0, 500) == 0.0


def test_trace_share_without_calls_is_zero() -> None:
    assert trace_share_pct(5, 0) == 0.0


def test_placement_check_when_every_thread_is_on_its_core() -> None:
    placed = make_checks()["placement"]

    assert placement_check_line(placed) == (
        "  checked at the end: 18 threads of 2 processes, every one on its planned core"
    )


def test_placement_check_counts_threads_off_their_core() -> None:
    placed = make_checks(threads_elsewhere=2)["placement"]

    assert placement_check_line(placed) == (
        "  checked at the end: 18 threads of 2 processes, 2 NOT on their core"
    )


def test_a_window_line() -> None:
    subject = make_subject(row=3, name="ShopMesh GetProduct")

    line = window_line(1, 2, subject, quiet_window(900))

    assert line == (
        f"round 1/2  3 {'ShopMesh GetProduct':<38}    900/s  p50  10.0 ms  p99  10.0 ms  "
        "0 errors  CPU: server 100% (loop idle 2%), clients 80%, other 0%"
    )


def test_the_round_line_shows_the_latest_rounds_ratios() -> None:
    # Round 2 of CALLS: ShopMesh 850, traced 570; echo 1000, echo + mTLS 950, bare 1000.
    line = round_ratios_line(2, five_subjects())

    assert line == "round 2 calls/s ratios: 3/1 0.850, 4/1 0.570, 3/2 0.895, 3/5 0.850"


def test_a_ratio_line() -> None:
    summary = make_summary()
    names = {row["row"]: row["name"] for row in summary["subjects"]}

    line = ratio_line(summary["ratios"]["shopmesh_vs_bare_product"], names, "  <- note")

    text = "ShopMesh GetProduct vs GetProduct on bare grpc.aio + mTLS"
    # Server CPU per call: 2 s over 2,000 calls against 2 s over 1,750.
    assert line == (
        f"  3/5  {text:<66}   0.875  0.850-0.900   0.875  1.000  1.000        0.875  <- note"
    )


def test_the_target_line() -> None:
    assert target_line(make_summary()["target"]) == (
        "Target: ShopMesh GetProduct calls/s / GetProduct on bare grpc.aio + mTLS calls/s "
        "(rows 3/5), median over 2 rounds of the per-round ratio, >= 0.85: 0.875 "
        "(min-max 0.850-0.900) -> MET"
    )


def test_a_missed_target_line() -> None:
    summary = make_summary(calls=((1000,), (950,), (800,), (600,), (1000,)))

    assert target_line(summary["target"]).endswith(": 0.800 (min-max 0.800-0.800) -> NOT MET")


def test_a_quiet_run_has_no_warnings() -> None:
    assert warning_lines(make_summary(), PINNED) == []


def only_row(summary: Summary) -> Summary:
    """The summary with its first subject only, so a test sees that row's warnings."""
    summary["subjects"] = summary["subjects"][:1]
    return summary


def test_a_busy_load_process_warns_above_its_limit() -> None:
    summary = only_row(make_summary())
    summary["subjects"][0]["client_cpu_pct_per_worker"] = [40.0, 85.0]
    assert warning_lines(summary, PINNED) == []

    summary["subjects"][0]["client_cpu_pct_per_worker"] = [40.0, 85.5]
    assert warning_lines(summary, PINNED) == [
        "WARNING: a load process used 86% of a core during 'bare grpc.aio echo': "
        "the client may be the limit; try more --workers"
    ]


def test_a_busy_load_core_warns_only_when_pinned() -> None:
    summary = only_row(make_summary())
    summary["subjects"][0]["core_busy_pct"]["0"] = 96.0

    assert warning_lines(summary, PINNED) == [
        "WARNING: the load core was 96% busy during 'bare grpc.aio echo': the client side "
        "may be the limit"
    ]
    assert warning_lines(summary, UNPINNED) == []


def test_an_idle_server_loop_warns_that_the_load_did_not_saturate_it() -> None:
    summary = only_row(make_summary())
    summary["subjects"][0]["server_loop_thread_idle_pct"] = 12.0

    assert warning_lines(summary, PINNED) == [
        "WARNING: the server's loop had no work 12% of the time during 'bare grpc.aio echo': "
        "the load did not saturate it"
    ]


def test_other_work_on_the_machine_warns() -> None:
    summary = only_row(make_summary())
    summary["subjects"][0]["other_cpu_pct"] = 15.0
    assert warning_lines(summary, PINNED) == []

    summary["subjects"][0]["other_cpu_pct"] = 21.0
    assert warning_lines(summary, PINNED) == [
        "WARNING: other processes used 21% of a core during 'bare grpc.aio echo': its "
        "figures are likely disturbed; rerun on a quiet machine"
    ]


def test_busy_idle_servers_warn() -> None:
    summary = only_row(make_summary())
    summary["subjects"][0]["idle_servers_and_etcd_cpu_pct"] = 11.0

    assert warning_lines(summary, PINNED) == [
        "WARNING: the idle servers and etcd used 11% of a core during 'bare grpc.aio echo'"
    ]


def test_threads_off_their_core_warn() -> None:
    summary = make_summary(checks=make_checks(threads_elsewhere=2))

    assert warning_lines(summary, PINNED) == [
        "WARNING: 2 of the 8 threads of echo (pid 41) may run off core 1"
    ]


def test_the_report_ends_with_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    summary = make_summary()

    print_report(summary, PINNED)

    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == target_line(summary["target"])
    assert placement_check_line(summary["checks"]["placement"]) in lines
    assert "(core 1: the servers; core 0: driver, load processes, etcd)." in lines
    assert any("10 GetProduct spans in product-1.jsonl, 1.00% of its 1,000 OK" in x for x in lines)


def test_an_unpinned_report_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    checks = make_checks()
    checks["placement"] = {}  # not pinned: nothing to check

    print_report(make_summary(where=UNPINNED, checks=checks), UNPINNED)

    out = capsys.readouterr().out
    assert "Placement: not pinned (--no-pin)\n" in out
    assert "checked at the end" not in out
    assert "(not pinned: any process on any core)." in out
