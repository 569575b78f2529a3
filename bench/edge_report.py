"""What the benchmark prints of the edge part: its section of the report. Pure
functions of the figures, as bench.report."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.placement import Placement
from bench.report import (
    BUSY_CLIENT_CPU,
    BUSY_LOAD_CORE,
    DISTURBED_OTHER_CPU,
    NAME,
    min_max,
    placement_check_line,
)
from bench.sidecar_report import goal_line
from bench.summary import EdgeJson, EdgeRowJson, JsonCaseJson, RatioJson

__all__ = [
    "edge_ratio_line",
    "edge_row_line",
    "edge_warning_lines",
    "json_case_line",
    "print_edge_report",
]

LOAD = 36  # width of the load column
SATURATED_SERVER_CORE = 90.0  # percent busy: below it, the server core was not the limit
MAIN_RATIOS = (
    ("edge_vs_envoy", "the edge vs Envoy", "  <- the goals' pair"),
    ("edge_vs_direct_grpc", "the edge vs direct gRPC", ""),
    ("envoy_vs_direct_grpc", "Envoy vs direct gRPC", ""),
)


def _over(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _inverse(value: float) -> float:
    return 1.0 / value if value > 0 else math.nan


def edge_row_line(row: EdgeRowJson, cores: Sequence[int]) -> str:
    idle = row["front_loop_thread_idle_pct"]
    busy = "".join(f" {row['core_busy_pct'][str(c)]:>8.0f}" for c in cores)
    return (
        f"{row['row']:<2} {row['name']:<{NAME}} {row['load']:<{LOAD}} "
        f"{row['calls_per_s']:>8,.0f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
        f"{row['errors']:>6} {row['front_cpu_us_per_call']:>8.0f} "
        f"{row['backend_cpu_us_per_call']:>8.0f} {row['server_side_cpu_us_per_call']:>8.0f} "
        f"{'-' if idle is None else f'{idle:.0f}':>6} {row['load_cpu_pct']:>7.0f}{busy}"
    )


def _rows_lines(edge: EdgeJson, cores: Sequence[int]) -> list[str]:
    core_headers = "".join(f" {'core ' + str(c) + '%':>8}" for c in cores)
    header = (
        f"   {'subject':<{NAME}} {'load (h2load)':<{LOAD}} {'calls/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'front us':>8} {'back us':>8} {'both us':>8} "
        f"{'idle %':>6} {'h2load%':>7}{core_headers}"
    )
    return [
        header,
        "-" * len(header),
        *(edge_row_line(row, cores) for row in edge["rows"]),
        "front us, back us: CPU microseconds per call of the process the load reaches (Envoy,",
        "an edge; for direct gRPC the backend itself) and of the backend behind it; both: the",
        "two together, what a call costs the server core. idle %: share of the time a Python",
        "front's asyncio thread had nothing to do (near 0: it was the limit). h2load %: the",
        "load process's CPU, of one core; core N %: how busy each core was.",
    ]


def edge_ratio_line(
    label: str, r: RatioJson, subject: EdgeRowJson, baseline: EdgeRowJson, note: str = ""
) -> str:
    """calls/s per round (median, min-max, pooled); p50, p99 and the server side's CPU
    per call as subject / baseline (there, lower is better for the subject)."""
    cpu = _over(subject["server_side_cpu_us_per_call"], baseline["server_side_cpu_us_per_call"])
    return (
        f"  {r['rows']:<4} {label:<44} {r['calls_per_s_median']:>7.3f} "
        f"{min_max(r['calls_per_s_min'], r['calls_per_s_max']):>12} "
        f"{r['calls_per_s_pooled']:>7.3f} {_inverse(r['p50_inverse']):>6.3f} "
        f"{_inverse(r['p99_inverse']):>6.3f} {cpu:>9.3f}{note}"
    )


def _ratio_header() -> str:
    return (
        f"  {'rows':<4} {'subject vs baseline':<44} {'median':>7} {'min-max':>12} "
        f"{'pooled':>7} {'p50':>6} {'p99':>6} {'CPU/call':>9}"
    )


def _ratios_lines(edge: EdgeJson) -> list[str]:
    rows = {row["row"]: row for row in edge["rows"]}

    def line(key: str, label: str, note: str = "") -> str:
        r = edge["ratios"][key]
        subject, baseline = (int(n) for n in r["rows"].split("/"))
        return edge_ratio_line(label, r, rows[subject], rows[baseline], note)

    candidates = [key for key in edge["ratios"] if key.endswith("_vs_edge")]
    per_round = " ".join(f"{x:.3f}" for x in edge["p99_edge_over_envoy_per_round"])
    lines = [
        "Ratios: calls/s is subject / baseline within each round, median over the rounds with",
        "min-max, and of the totals (pooled); p50, p99 and the server side's CPU per call",
        "(front and backend) are subject / baseline over all rounds: below 1 the subject",
        "is faster, or cheaper.",
        _ratio_header(),
        *(line(key, label, note) for key, label, note in MAIN_RATIOS),
        f"  p99 the edge / Envoy per round: {per_round}; Envoy and the edge answer with "
        + ("the same JSON" if edge["same_json"] else "DIFFERENT JSON (see the progress lines)"),
        "",
        "HTTP server candidates: the same Site and Edge on another server, against row 3 (the",
        "edge's own gateway._http on httptools):",
    ]
    if candidates:
        lines.append(_ratio_header())
        lines += [line(key, edge["ratios"][key]["subject"]) for key in candidates]
    for name, why in edge["settings"]["skipped"].items():
        lines.append(f"  {name}: {why}")
    return lines


def json_case_line(case: JsonCaseJson) -> str:
    name = case["message"].rsplit(".", 1)[-1]
    return (
        f"  {name:<22} {case['direction']:<6} {case['json_bytes']:>6} "
        f"{case['orjson_us']:>8.1f} {case['stdlib_us']:>8.1f} {case['speedup']:>6.2f} "
        f"{case['json_format_us']:>11.1f} {case['orjson_alone_us']:>8.2f} "
        f"{case['stdlib_alone_us']:>8.2f} {case['speedup_alone']:>6.2f}"
        + ("" if case["same_result"] else "  NOT THE SAME RESULT")
    )


def _json_lines(cases: Sequence[JsonCaseJson]) -> list[str]:
    return [
        "JSON candidates, orjson vs the stdlib's json, as the edge uses them (in one process",
        "on the server core, before the rounds; microseconds per message, fastest of 5):",
        "the whole step (json_format's MessageToDict + dumps, or loads + ParseDict), then",
        "json_format alone and the serializer alone; x: stdlib / orjson (above 1: orjson",
        "is faster).",
        f"  {'message':<22} {'way':<6} {'bytes':>6} {'orjson':>8} {'stdlib':>8} {'x':>6} "
        f"{'json_format':>11} {'orjson':>8} {'stdlib':>8} {'x':>6}",
        *(json_case_line(case) for case in cases),
    ]


def edge_warning_lines(edge: EdgeJson, where: Placement) -> list[str]:
    """What the reader should doubt: a load-side limit, a server core that was not
    full, other work on the machine."""
    lines = []
    for row in edge["rows"]:
        name = row["name"]
        if row["load_cpu_pct"] > BUSY_CLIENT_CPU:
            lines.append(
                f"WARNING: h2load used {row['load_cpu_pct']:.0f}% of a core during '{name}': "
                "the load may be the limit"
            )
        if where.load_cpus is not None:
            load = sum(row["core_busy_pct"][str(c)] for c in where.load_cpus)
            if load > BUSY_LOAD_CORE:
                lines.append(
                    f"WARNING: the load core was {load:.0f}% busy during '{name}': the load "
                    "side may be the limit"
                )
        if where.server_cpus is not None:
            busy = sum(row["core_busy_pct"][str(c)] for c in where.server_cpus)
            if busy < SATURATED_SERVER_CORE:
                lines.append(
                    f"WARNING: the server core was only {busy:.0f}% busy during '{name}': it "
                    "was not the limit"
                )
        if row["other_cpu_pct"] > DISTURBED_OTHER_CPU:
            lines.append(
                f"WARNING: other processes used {row['other_cpu_pct']:.0f}% of a core during "
                f"'{name}': its figures are likely disturbed"
            )
    for row in edge["rows"]:
        if row["candidate"] and row["errors"]:
            samples = "; ".join(row["error_samples"])
            lines.append(
                f"WARNING: {row['errors']} calls failed on '{row['name']}' ({samples}): a "
                "candidate server's failures do not fail the run"
            )
    for label, check in edge["placement_check"].items():
        if check["threads_elsewhere"]:
            lines.append(
                f"WARNING: {check['threads_elsewhere']} of the {check['threads']} threads of "
                f"{label} (pid {check['pid']}) may run off core {check['cpus']}"
            )
    return lines


def print_edge_report(edge: EdgeJson, where: Placement) -> None:
    s = edge["settings"]
    versions = ", ".join(f"{name} {v}" for name, v in edge["versions"].items())
    print()
    print(
        f"Edge rows: HTTP/JSON {s['url']} -> gRPC GetProduct; {len(edge['rows'])} subjects "
        f"interleaved over {s['rounds']} rounds, per subject and round {s['warmup_s']:g} s "
        f"warm-up + {s['window_s']:g} s measured; h2load, {s['in_flight']} in flight"
    )
    print(f"Placement: {s['placement']}")
    if edge["placement_check"]:
        print(placement_check_line(edge["placement_check"]))
    print(f"Versions: {versions}")
    for line in [
        *_rows_lines(edge, where.cores),
        "",
        *_ratios_lines(edge),
        "",
        *_json_lines(edge["json_candidates"]),
        "",
        *edge_warning_lines(edge, where),
        "Edge goals:",
        *(goal_line(goal) for goal in edge["goals"]),
    ]:
        print(line)
