"""What the benchmark prints: progress lines while it runs, then the report.

The lines are built by pure functions of the figures (`window_line`, `warning_lines`,
...), so what the report says can be checked without running a benchmark."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence

from bench.load import Window, percentile
from bench.placement import Placement, cpu_list
from bench.results import SubjectResult, ratio
from bench.summary import RatioJson, SubjectJson, Summary, TargetJson, ThreadPlacement

__all__ = [
    "Progress",
    "min_max",
    "placement_check_line",
    "print_report",
    "ratio_line",
    "round_ratios_line",
    "rows_of",
    "target_line",
    "trace_share_pct",
    "warning_lines",
    "window_line",
]

DISTURBED_OTHER_CPU = 15.0  # percent of a core used by others during a subject: warn
BUSY_CLIENT_CPU = 85.0  # percent of a core used by one load process: warn
BUSY_LOAD_CORE = 95.0  # percent of the load core busy (pinned): the client may limit
IDLE_SERVER_LOOP = 10.0  # percent of the time the server's loop had no work: not saturated
BUSY_BACKGROUND_CPU = 10.0  # percent of a core used by the idle servers and etcd: warn

NAME = 38  # width of a subject's name

# The ratios of the per-round table, and of the ratios table with its notes, in order.
PER_ROUND_RATIOS = (
    ("shopmesh_vs_plaintext_echo", "ShopMesh / echo"),
    ("shopmesh_traced_vs_plaintext_echo", "ShopMesh traced / echo"),
    ("shopmesh_vs_mtls_echo", "ShopMesh / echo + mTLS"),
)
REPORTED_RATIOS = (
    ("shopmesh_vs_plaintext_echo", ""),
    ("shopmesh_traced_vs_plaintext_echo", ""),
    ("shopmesh_vs_mtls_echo", ""),
    ("shopmesh_vs_bare_product", "  <- what the mesh adds: the target"),
    ("bare_product_vs_mtls_echo", ""),
    ("mtls_echo_vs_plaintext_echo", ""),
)


class Progress:
    """Phase lines with the time since start; on a terminal, a live countdown too."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._tty = sys.stdout.isatty()
        self._ticking = False

    def report(self, message: str) -> None:
        self._clear()
        print(f"[{time.monotonic() - self._start:6.1f}s] {message}", flush=True)

    def tick(self, text: str) -> None:
        if not self._tty:
            return
        self._clear()
        if text:
            sys.stdout.write(f"          {text}")
            sys.stdout.flush()
            self._ticking = True

    def ticker(self, prefix: str) -> Callable[[str], None]:
        """tick() with `prefix` before each text; an empty text still clears the line."""
        return lambda text: self.tick(f"{prefix} {text}" if text else "")

    def _clear(self) -> None:
        if self._ticking:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self._ticking = False

    @staticmethod
    def placement_text(where: Placement) -> str:
        if where.server_cpus is None or where.load_cpus is None:
            return where.note
        return (
            f"servers on core {cpu_list(where.server_cpus)}; driver, load processes and "
            f"etcd on core {cpu_list(where.load_cpus)}"
        )

    def window(self, number: int, rounds: int, subject: SubjectResult, window: Window) -> None:
        self.report(window_line(number, rounds, subject, window))
        for sample in window.error_samples:
            self.report(f"  ! {sample}")

    def round_ratios(self, number: int, subjects: Sequence[SubjectResult]) -> None:
        self.report(round_ratios_line(number, subjects))


def window_line(number: int, rounds: int, subject: SubjectResult, window: Window) -> str:
    """A window's progress line: calls/s, latency, errors, and where the CPU went."""
    latencies = sorted(window.latencies)

    def pct(seconds: float) -> str:
        return f"{window.percent(seconds):.0f}%"

    return (
        f"round {number}/{rounds}  {subject.row} {subject.name:<{NAME}} "
        f"{window.calls_per_second:>6,.0f}/s  p50 {1000 * percentile(latencies, 0.5):5.1f} ms  "
        f"p99 {1000 * percentile(latencies, 0.99):5.1f} ms  {window.errors} errors  CPU: "
        f"server {pct(window.server_cpu)} (loop idle {window.server_loop_idle_pct:.0f}%), "
        f"clients {pct(sum(window.client_cpu))}, other {pct(window.other_cpu)}"
    )


def round_ratios_line(number: int, subjects: Sequence[SubjectResult]) -> str:
    """The latest round's calls/s ratios of ShopMesh to each baseline (the subjects in
    the driver's order: echo, echo + mTLS, ShopMesh, ShopMesh traced, bare product)."""
    plain, mtls, mesh, traced, bare = subjects
    parts = [
        f"{r.label} {r.per_round[-1]:.3f}"
        for r in (
            ratio(mesh, plain),
            ratio(traced, plain),
            ratio(mesh, mtls),
            ratio(mesh, bare),
        )
    ]
    return f"round {number} calls/s ratios: " + ", ".join(parts)


def min_max(low: float, high: float) -> str:
    return f"{low:.3f}-{high:.3f}"


def rows_of(r: RatioJson) -> tuple[int, int]:
    """The subject's and the baseline's row numbers, from "3/5"."""
    subject, baseline = r["rows"].split("/")
    return int(subject), int(baseline)


def trace_share_pct(spans: int, calls: int) -> float:
    """Traced calls in percent of the calls; 0 if there were none."""
    return 100.0 * spans / calls if calls else 0.0


def placement_check_line(placed: Mapping[str, ThreadPlacement]) -> str:
    threads = sum(p["threads"] for p in placed.values())
    stray = sum(p["threads_elsewhere"] for p in placed.values())
    return f"  checked at the end: {threads} threads of {len(placed)} processes, " + (
        "every one on its planned core" if not stray else f"{stray} NOT on their core"
    )


def ratio_line(r: RatioJson, names: Mapping[int, str], note: str) -> str:
    """A row of the ratios table."""
    numerator, denominator = rows_of(r)
    text = f"{names[numerator]} vs {names[denominator]}"
    return (
        f"  {r['rows']:<4} {text:<66} {r['calls_per_s_median']:>7.3f} "
        f"{min_max(r['calls_per_s_min'], r['calls_per_s_max']):>12} "
        f"{r['calls_per_s_pooled']:>7.3f} {r['p50_inverse']:>6.3f} {r['p99_inverse']:>6.3f} "
        f"{r['server_cpu_per_call_inverse']:>12.3f}{note}"
    )


def target_line(t: TargetJson) -> str:
    verdict = "MET" if t["met"] else "NOT MET"
    return (
        f"Target: {t['ratio']}, {t['statistic']}, >= {t['minimum']}: "
        f"{t['value']:.3f} (min-max {min_max(t['min'], t['max'])}) -> {verdict}"
    )


def print_report(summary: Summary, where: Placement) -> None:
    _print_setup(summary, where)
    _print_totals(summary)
    _print_per_round(summary)
    _print_cpu(summary, where)
    _print_ratios(summary)
    _print_evidence(summary)
    for line in warning_lines(summary, where):
        print(line)
    print(target_line(summary["target"]))


def _print_setup(summary: Summary, where: Placement) -> None:
    s = summary["settings"]
    m = summary["machine"]
    rounds = s["rounds"]
    print()
    print(
        f"Unary calls: {len(summary['subjects'])} subjects interleaved over {rounds} rounds; "
        f"per subject and round {s['warmup_s']:g} s warm-up + {s['window_s']:g} s measured "
        f"({rounds * s['window_s']:g} s measured per subject); {s['workers']} load processes "
        f"x {s['concurrency_per_worker']} calls in flight"
    )
    print(f"Placement: {Progress.placement_text(where)}")
    placed = summary["checks"]["placement"]
    if placed:
        print(placement_check_line(placed))
    print(
        f"Machine: {m['cores']} cores, Python {m['python']}, grpcio {m['grpcio']}, "
        f"uvloop {m['uvloop']}"
    )
    print()


def _print_totals(summary: Summary) -> None:
    print(
        f"Totals over the {summary['settings']['rounds']} rounds "
        "(calls/s: all calls / all measured time)"
    )
    header = (
        f"   {'subject':<{NAME}} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'server CPU %':>12} {'client CPU %':>12} {'other CPU %':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in summary["subjects"]:
        print(
            f"{row['row']:<2} {row['name']:<{NAME}} {row['calls_per_s']:>8,.0f} "
            f"{row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} {row['errors']:>6} "
            f"{row['server_cpu_pct']:>12.0f} {row['client_cpu_pct']:>12.0f} "
            f"{row['other_cpu_pct']:>11.0f}"
        )
    print()
    print("CPU % is of one core over the measured windows. server: the server under load,")
    print("all its threads; client: all load processes together; other: every process on")
    print("the machine that is not part of the benchmark (another job shows up here).")
    print()


def _print_per_round(summary: Summary) -> None:
    rounds = summary["settings"]["rounds"]
    print("Calls/s per round (every round measures the subjects in the order below)")
    header = f"   {'subject':<{NAME}}" + "".join(f"{'r' + str(i + 1):>8}" for i in range(rounds))
    print(header)
    print("-" * len(header))
    for row in summary["subjects"]:
        values = "".join(f"{x:>8,.0f}" for x in row["calls_per_s_per_round"])
        print(f"{row['row']:<2} {row['name']:<{NAME}}{values}")
    for key, text in PER_ROUND_RATIOS:
        r = summary["ratios"][key]
        values = "".join(f"{x:>8.3f}" for x in r["calls_per_s_per_round"])
        print(f"{r['rows']:<3} {text:<{NAME - 1}}{values}")
    print()


def _print_cpu(summary: Summary, where: Placement) -> None:
    print("Where the CPU went (over the measured windows)")
    core_headers = "".join(f" {'core ' + str(c) + ' %':>9}" for c in where.cores)
    header = (
        f"   {'subject':<{NAME}} {'server us/call':>14} {'client us/call':>14} "
        f"{'loop ran %':>10} {'waited %':>8} {'idle %':>6} {'each client %':>13} "
        f"{'idle srv %':>10}{core_headers}"
    )
    print(header)
    print("-" * len(header))
    for row in summary["subjects"]:
        print(_cpu_row(row, where.cores))
    print()
    print("us/call: CPU microseconds per completed call. loop ran / waited / idle: share")
    print("of the time the server's asyncio thread ran on a core / was runnable but found")
    print("its core taken (by the server's own gRPC threads, mostly) / had nothing to do")
    print("(from /proc/<pid>/task/<pid>/schedstat); idle near 0 means the server, not the")
    print("load, was the limit. idle srv: the other servers (not under load) and etcd.")
    print("core N: how busy each core was, every process included")
    if where.server_cpus is not None and where.load_cpus is not None:
        print(
            f"(core {cpu_list(where.server_cpus)}: the servers; core "
            f"{cpu_list(where.load_cpus)}: driver, load processes, etcd)."
        )
    else:
        print("(not pinned: any process on any core).")
    print()


def _cpu_row(row: SubjectJson, cores: Sequence[int]) -> str:
    each = "/".join(f"{x:.0f}" for x in row["client_cpu_pct_per_worker"])
    busy = "".join(f" {row['core_busy_pct'][str(c)]:>9.0f}" for c in cores)
    return (
        f"{row['row']:<2} {row['name']:<{NAME}} {row['server_cpu_us_per_call']:>14.0f} "
        f"{row['client_cpu_us_per_call']:>14.0f} {row['server_loop_thread_ran_pct']:>10.0f} "
        f"{row['server_loop_thread_waited_for_cpu_pct']:>8.0f} "
        f"{row['server_loop_thread_idle_pct']:>6.0f} {each:>13} "
        f"{row['idle_servers_and_etcd_cpu_pct']:>10.0f}{busy}"
    )


def _print_ratios(summary: Summary) -> None:
    print(
        f"Ratios: calls/s is subject / baseline within each round, then the median over "
        f"the {summary['settings']['rounds']} rounds"
    )
    print("with min-max, and the ratio of the totals (pooled); p50, p99 and server CPU per")
    print("call are baseline / subject over all rounds. 1.0 is parity, higher is better for")
    print("the subject everywhere.")
    header = (
        f"  {'rows':<4} {'subject vs baseline':<66} {'median':>7} {'min-max':>12} "
        f"{'pooled':>7} {'p50':>6} {'p99':>6} {'srv CPU/call':>12}"
    )
    print(header)
    names = {row["row"]: row["name"] for row in summary["subjects"]}
    for key, note in REPORTED_RATIOS:
        print(ratio_line(summary["ratios"][key], names, note))
    print()


def _print_evidence(summary: Summary) -> None:
    print("Stack evidence (from each ShopMesh instance, over the whole run)")
    for check in summary["checks"]["instances"]:
        total = check["metrics_handled_ok_total"]
        spans = check["trace_spans_get_product"]
        share = trace_share_pct(spans, total)
        print(
            f"  {check['subject']} ({check['instance_id']}, trace_sample_ratio "
            f"{check['trace_sample_ratio']:g}): GetProduct as product "
            + ("PERMISSION_DENIED" if check["authz_denies_product_identity"] else "NOT denied")
            + f"; grpc_server_handled_total{{GetProduct,OK}} +{check['metrics_handled_ok_during_load']:,} "
            f"during the load; {spans:,} GetProduct spans in {check['trace_file']}, "
            f"{share:.2f}% of its {total:,} OK calls (expected ~{100 * check['trace_sample_ratio']:g}%)"
        )
    print()


def warning_lines(summary: Summary, where: Placement) -> list[str]:
    """What the reader should doubt: a load-side limit, an unsaturated server, other
    work on the machine, threads off their planned core."""
    lines = [line for row in summary["subjects"] for line in _subject_warnings(row, where)]
    for label, check in summary["checks"]["placement"].items():
        if check["threads_elsewhere"]:
            lines.append(
                f"WARNING: {check['threads_elsewhere']} of the {check['threads']} threads of "
                f"{label} (pid {check['pid']}) may run off core {check['cpus']}"
            )
    return lines


def _subject_warnings(row: SubjectJson, where: Placement) -> list[str]:
    name = row["name"]
    lines = []
    busiest = max(row["client_cpu_pct_per_worker"], default=0.0)
    if busiest > BUSY_CLIENT_CPU:
        lines.append(
            f"WARNING: a load process used {busiest:.0f}% of a core during '{name}': "
            "the client may be the limit; try more --workers"
        )
    if where.load_cpus is not None:
        load_core = sum(row["core_busy_pct"][str(c)] for c in where.load_cpus)
        if load_core > BUSY_LOAD_CORE:
            lines.append(
                f"WARNING: the load core was {load_core:.0f}% busy during '{name}': the "
                "client side may be the limit"
            )
    if row["server_loop_thread_idle_pct"] > IDLE_SERVER_LOOP:
        lines.append(
            f"WARNING: the server's loop had no work {row['server_loop_thread_idle_pct']:.0f}% "
            f"of the time during '{name}': the load did not saturate it"
        )
    if row["other_cpu_pct"] > DISTURBED_OTHER_CPU:
        lines.append(
            f"WARNING: other processes used {row['other_cpu_pct']:.0f}% of a core during "
            f"'{name}': its figures are likely disturbed; rerun on a quiet machine"
        )
    if row["idle_servers_and_etcd_cpu_pct"] > BUSY_BACKGROUND_CPU:
        lines.append(
            f"WARNING: the idle servers and etcd used "
            f"{row['idle_servers_and_etcd_cpu_pct']:.0f}% of a core during '{name}'"
        )
    return lines
