"""What the benchmark prints of the sidecar part: a progress line per window and per
round, then its section of the report. Pure functions of the figures, as bench.report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.load import Window, percentile
from bench.placement import Placement, cpu_list
from bench.report import BUSY_LOAD_CORE, DISTURBED_OTHER_CPU, NAME, min_max
from bench.results import SubjectResult
from bench.sidecar_results import CALLER_ENVOY, INBOUND_ENVOY, SidecarRun
from bench.summary import GoalJson, PropagationJson, SidecarJson, SidecarRowJson

__all__ = [
    "breakdown_lines",
    "goal_line",
    "print_sidecar_report",
    "propagation_lines",
    "sidecar_round_line",
    "sidecar_warning_lines",
    "sidecar_window_line",
]

SATURATED_SERVER_CORE = 90.0  # percent busy: below it, the server core was not the limit


def sidecar_window_line(number: int, rounds: int, subject: SubjectResult, window: Window) -> str:
    """A sidecar window's progress line: calls/s, latency, and the CPU of the app, of
    both Envoys and of the load processes."""
    latencies = sorted(window.latencies)

    def pct(seconds: float) -> str:
        return f"{window.percent(seconds):.0f}%"

    tracked = window.tracked_cpu
    return (
        f"round {number}/{rounds}  {subject.row} {subject.name:<{NAME}} "
        f"{window.calls_per_second:>6,.0f}/s  p50 {1000 * percentile(latencies, 0.5):5.1f} ms  "
        f"p99 {1000 * percentile(latencies, 0.99):5.1f} ms  {window.errors} errors  CPU: "
        f"app {pct(window.server_cpu)}, Envoys: inbound {pct(tracked.get(INBOUND_ENVOY, 0.0))} "
        f"caller {pct(tracked.get(CALLER_ENVOY, 0.0))}, clients {pct(sum(window.client_cpu))}, "
        f"other {pct(window.other_cpu)}"
    )


def sidecar_round_line(number: int, run: SidecarRun) -> str:
    """The latest round's calls/s ratio, and p50 added at low and light load."""
    load = run.load
    calls = _ratio(load.sidecar.per_round[-1], load.proxyless.per_round[-1])
    added = ", ".join(
        f"{level.p50_added_ms_per_round()[-1]:.2f} ms at {level.in_flight}"
        for level in (run.low, run.light)
    )
    return (
        f"round {number} sidecar: calls/s {load.sidecar.row}/{load.proxyless.row} "
        f"{calls:.3f}; p50 added {added} in flight"
    )


def goal_line(goal: GoalJson) -> str:
    verdict = "MET" if goal["met"] else "NOT MET"
    return f"  {goal['figure']} {goal['comparison']} {goal['bound']:g}: {goal['value']:.3f} -> {verdict}"


def _row_line(row: SidecarRowJson, cores: Sequence[int]) -> str:
    busy = "".join(f" {row['core_busy_pct'][str(c)]:>8.0f}" for c in cores)
    return (
        f"{row['row']:<2} {row['name']:<{NAME}} {row['calls_per_s']:>8,.0f} "
        f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['errors']:>6} "
        f"{row['app_cpu_us_per_call']:>7.0f} {row['inbound_envoy_cpu_us_per_call']:>8.0f} "
        f"{row['caller_envoy_cpu_us_per_call']:>8.0f} {row['client_cpu_us_per_call']:>7.0f} "
        f"{row['inbound_envoy_switches_per_call']:>7.2f} {row['caller_envoy_switches_per_call']:>7.2f}"
        f"{busy}"
    )


def _rows_lines(sidecar: SidecarJson, cores: Sequence[int]) -> list[str]:
    core_headers = "".join(f" {'core ' + str(c) + '%':>8}" for c in cores)
    header = (
        f"   {'subject':<{NAME}} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'app us':>7} {'inbound':>8} {'caller':>8} {'client':>7} {'in cs':>7} "
        f"{'call cs':>7}{core_headers}"
    )
    return [
        header,
        "-" * len(header),
        *(_row_line(row, cores) for row in sidecar["rows"]),
        "app us, inbound, caller, client: CPU microseconds per call of the product app, of",
        "its (inbound) Envoy, of the caller's Envoy and of the load processes; in cs, call",
        "cs: context switches per call of the inbound and the caller's Envoy (1 or more: it",
        "sleeps and wakes for every call, batching nothing); core N %: how busy each core was.",
    ]


def breakdown_lines(sidecar: SidecarJson, where: Placement) -> list[str]:
    """The ratio and the p50 added, then where the CPU of a call goes on each core."""
    r = sidecar["ratio"]
    proxyless, through, low_p, low_s, light_p, light_s = sidecar["rows"]  # SidecarRun.rows
    per_round = " ".join(f"{x:.3f}" for x in r["calls_per_s_per_round"])
    added = " ".join(f"{x:.2f}" for x in sidecar["p50_added_ms_per_round"])
    app_p, app_s = proxyless["app_cpu_us_per_call"], through["app_cpu_us_per_call"]
    inbound, caller = (
        through["inbound_envoy_cpu_us_per_call"],
        through["caller_envoy_cpu_us_per_call"],
    )
    client_p, client_s = proxyless["client_cpu_us_per_call"], through["client_cpu_us_per_call"]
    server_core = app_s + inbound
    return [
        f"Calls/s through two sidecars / proxyless (rows {r['rows']}): median "
        f"{r['calls_per_s_median']:.3f} (min-max {min_max(r['calls_per_s_min'], r['calls_per_s_max'])}; "
        f"per round {per_round}); p50 {r['p50_inverse']:.3f}, p99 {r['p99_inverse']:.3f} "
        "(proxyless / sidecars)",
        f"p50 added by the two sidecars at {low_s['in_flight']} in flight: "
        f"{sidecar['p50_added_ms']:.2f} ms (proxyless {low_p['p50_ms']:.2f} ms, through the "
        f"sidecars {low_s['p50_ms']:.2f} ms; per round {added}); at {light_s['in_flight']} "
        f"in flight {sidecar['p50_added_light_load_ms']:.2f} ms (proxyless "
        f"{light_p['p50_ms']:.2f}, sidecars {light_s['p50_ms']:.2f})",
        f"Envoys' CPU per call at {through['in_flight']} in flight: inbound {inbound:.0f} us + "
        f"caller {caller:.0f} us = {sidecar['envoy_cpu_us_per_call']:.0f} us",
        "Where a call's CPU goes (us per call, at the run's load):",
        f"  {_core_of(where, 'server')}: proxyless app {app_p:.0f}; sidecar path app {app_s:.0f} "
        f"+ its Envoy {inbound:.0f} = {server_core:.0f} -> if this core is the limit, "
        f"calls/s ratio {_ratio(app_p, server_core):.3f}",
        f"  {_core_of(where, 'load')}: proxyless client {client_p:.0f} (mTLS); sidecar path "
        f"client {client_s:.0f} (h2c on a Unix socket) + caller's Envoy {caller:.0f} = "
        f"{client_s + caller:.0f}",
    ]


def _core_of(where: Placement, side: str) -> str:
    cpus = where.server_cpus if side == "server" else where.load_cpus
    return f"{side} side (core {cpu_list(cpus)})" if cpus is not None else f"{side} side"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def propagation_lines(p: PropagationJson) -> list[str]:
    medians = [
        statistics.median(column) if not any(math.isnan(x) for x in column) else math.nan
        for column in zip(*p["per_sidecar_ms"], strict=True)
    ]
    per_sidecar = ", ".join(
        f"{label} {ms:.1f}" for label, ms in zip(p["sidecars"], medians, strict=True)
    )
    cpu = ", ".join(f"{label} {ms:.1f}" for label, ms in p["cpu_ms_per_change"].items())
    return [
        f"Registry change to every sidecar's /clusters ({len(p['sidecars'])} sidecars, "
        f"{p['changes']} changes: a fake endpoint registered, then deleted, ...; from the etcd "
        "call returning, each admin polled about every 1 ms):",
        f"  median {p['median_ms']:.1f} ms, max {p['max_ms']:.1f} ms, {p['missed']} missed; "
        f"first sidecar to show it: median {p['first_sidecar_median_ms']:.1f} ms",
        f"  median per sidecar, ms: {per_sidecar}",
        f"  CPU per change, ms: {cpu}",
    ]


def sidecar_warning_lines(sidecar: SidecarJson, where: Placement) -> list[str]:
    """What the reader should doubt in the sidecar rows."""
    lines = []
    for row in sidecar["rows"]:
        if where.load_cpus is not None:
            load = sum(row["core_busy_pct"][str(c)] for c in where.load_cpus)
            if load > BUSY_LOAD_CORE:
                lines.append(
                    f"WARNING: the load core was {load:.0f}% busy during '{row['name']}': the "
                    "client side (load processes, caller's Envoy) may be the limit"
                )
        if row["other_cpu_pct"] > DISTURBED_OTHER_CPU:
            lines.append(
                f"WARNING: other processes used {row['other_cpu_pct']:.0f}% of a core during "
                f"'{row['name']}': its figures are likely disturbed"
            )
    for row in sidecar["rows"][:2]:  # at the run's load the server core should be full
        if where.server_cpus is not None:
            busy = sum(row["core_busy_pct"][str(c)] for c in where.server_cpus)
            if busy < SATURATED_SERVER_CORE:
                lines.append(
                    f"WARNING: the server core was only {busy:.0f}% busy during "
                    f"'{row['name']}': it was not the limit"
                )
    return lines


def print_sidecar_report(sidecar: SidecarJson, where: Placement) -> None:
    s = sidecar["settings"]
    print()
    timing = ", ".join(
        f"{n} in flight {w:g} + {m:g} s"
        for n, w, m in zip(s["in_flight"], s["warmup_s"], s["window_s"], strict=True)
    )
    print(
        f"Sidecar data plane: {len(sidecar['rows'])} more windows at the end of each of the "
        f"{s['rounds']} rounds, from the same load processes, both paths back to back at "
        f"each load (warm-up + measured: {timing})"
    )
    print(f"Placement: {s['placement']}")
    for line in [
        *_rows_lines(sidecar, where.cores),
        "",
        *breakdown_lines(sidecar, where),
        f"GetProduct OK in the sidecar instance's /metrics during the load: "
        f"{sidecar['app_handled_ok_during_load']:,}",
        "",
        *propagation_lines(sidecar["propagation"]),
        *sidecar_warning_lines(sidecar, where),
        "Sidecar goals:",
        *(goal_line(goal) for goal in sidecar["goals"]),
    ]:
        print(line)
