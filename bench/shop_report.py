"""What the benchmark prints of the shop part: its progress lines and its section of
the report. Pure functions of the figures, as bench.report."""

from __future__ import annotations

from collections.abc import Sequence

from bench.load import Window, percentile
from bench.placement import Placement
from bench.report import DISTURBED_OTHER_CPU, min_max, placement_check_line
from bench.results import SubjectResult, ratio
from bench.shop_results import BROKER, CONSUMER, ShopSubject
from bench.sidecar_report import goal_line
from bench.summary import BurstsJson, RelayPhaseJson, ShopJson, ShopRowJson, SpreadJson

__all__ = [
    "bursts_text",
    "print_shop_report",
    "relay_phase_lines",
    "shop_round_line",
    "shop_row_line",
    "shop_warning_lines",
    "shop_window_line",
    "spread_text",
]

NAME = 44  # width of a subject's name
PROCESS = 9  # width of a CPU column
SATURATED_SERVER_CORE = 90.0  # percent busy: below it, the server core was not the limit


def shop_window_line(number: int, rounds: int, subject: ShopSubject, window: Window) -> str:
    """A window's progress line: calls/s, latency, errors, and each process's CPU."""
    latencies = sorted(window.latencies)
    cpu = {subject.server: window.server_cpu, **window.tracked_cpu}
    shares = ", ".join(f"{label} {window.percent(seconds):.0f}%" for label, seconds in cpu.items())
    return (
        f"round {number}/{rounds}  {subject.result.row} {subject.result.name:<{NAME}} "
        f"{window.calls_per_second:>6,.0f}/s  p50 {1000 * percentile(latencies, 0.5):6.1f} ms  "
        f"p99 {1000 * percentile(latencies, 0.99):6.1f} ms  {window.errors} errors  CPU: "
        f"{shares}, load {window.percent(sum(window.client_cpu)):.0f}%, "
        f"other {window.percent(window.other_cpu):.0f}%"
    )


def shop_round_line(number: int, subjects: Sequence[SubjectResult]) -> str:
    baseline, orders = subjects
    this_round = ratio(orders, baseline).per_round[-1]
    return f"round {number} shop: calls/s PlaceOrder / GetProduct {this_round:.3f}"


def spread_text(spread: SpreadJson) -> str:
    """ "p50 4.1 / p90 6.0 / p99 9.9 / max 12.0 ms (n=200)"."""
    if not spread["count"]:
        return "none"
    return (
        f"p50 {spread['p50_ms']:.1f} / p90 {spread['p90_ms']:.1f} / p99 "
        f"{spread['p99_ms']:.1f} / max {spread['max_ms']:.1f} ms (n={spread['count']})"
    )


def _labels(row: ShopRowJson) -> list[str]:
    return list(row["cpu_us_per_call"])


def shop_row_line(row: ShopRowJson, cores: Sequence[int]) -> str:
    cpu = "".join(f" {us:>{PROCESS}.0f}" for us in row["cpu_us_per_call"].values())
    busy = "".join(f" {row['core_busy_pct'][str(c)]:>7.0f}" for c in cores)
    return (
        f"{row['row']:<2} {row['name']:<{NAME}} {row['in_flight']:>4} {row['calls_per_s']:>8,.1f} "
        f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['errors']:>6}{cpu} "
        f"{row['mesh_cpu_us_per_call']:>{PROCESS}.0f} {row['consumer_cpu_us_per_call']:>8.0f} "
        f"{row['load_cpu_us_per_call']:>6.0f}{busy}"
    )


def _rows_lines(shop: ShopJson, cores: Sequence[int]) -> list[str]:
    labels = _labels(shop["rows"][0])
    columns = "".join(f" {label:>{PROCESS}}" for label in labels)
    core_headers = "".join(f" {'core ' + str(c) + '%':>7}" for c in cores)
    header = (
        f"   {'subject':<{NAME}} {'in f':>4} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6}{columns} {'mesh':>{PROCESS}} {'consumer':>8} {'load':>6}{core_headers}"
    )
    return [
        header,
        "-" * len(header),
        *(shop_row_line(row, cores) for row in shop["rows"]),
        f"CPU microseconds per call of each process ({BROKER}: the broker), mesh: all of them;",
        f"{CONSUMER}: the relay consumer's process; load: the load processes. For PlaceOrder,",
        "what one order costs each.",
    ]


def _ratio_lines(shop: ShopJson) -> list[str]:
    r = shop["ratio"]
    per_round = " ".join(f"{x:.3f}" for x in r["calls_per_s_per_round"])
    return [
        f"PlaceOrder / GetProduct, calls/s: median {r['calls_per_s_median']:.3f} over the rounds "
        f"(min-max {min_max(r['calls_per_s_min'], r['calls_per_s_max'])}; per round "
        f"{per_round}), pooled {r['calls_per_s_pooled']:.3f}; latency at the same in flight: "
        f"p50 {shop['p50_over_baseline']:.1f} times, p99 {shop['p99_over_baseline']:.1f} times "
        "GetProduct's",
    ]


def _idle_lines(shop: ShopJson) -> list[str]:
    idle = shop["idle_orders"]
    lines = [
        f"Orders one at a time at idle ({idle['orders']}, {idle['errors']} failed): PlaceOrder "
        f"{spread_text(idle['latency'])}"
    ]
    lines += [f"  ! {sample}" for sample in idle["error_samples"]]
    return lines


def relay_phase_lines(phase: RelayPhaseJson) -> list[str]:
    """A phase of the relay's latency: the whole, its stages, per type, the consumer."""
    expected = "" if phase["expected"] is None else f" of {phase['expected']}"
    lines = [
        f"  {phase['phase']} ({phase['detail']}): {phase['events']}{expected} events",
        f"    commit to consumer: {spread_text(phase['commit_to_consumer'])}",
    ]
    lines += [f"    {name}: {spread_text(s)}" for name, s in phase["stages"].items()]
    lines += [f"    {kind}: {spread_text(s)}" for kind, s in phase["by_type"].items()]
    lines.append(
        "    consumer's cycle per event while events waited (ack, fetch): "
        + spread_text(phase["consumer_cycle"])
    )
    lines.append("    " + bursts_text(phase["bursts"]))
    return lines


def bursts_text(bursts: BurstsJson) -> str:
    """The relay's batches as the broker stored them, in words."""
    if not bursts["bursts"]:
        return "stored in no burst"
    return (
        f"stored in {bursts['bursts']} bursts (gaps of {bursts['gap_ms']:g} ms or more), "
        f"{bursts['events_p50']:g} events each at p50 (max {bursts['events_max']}); from "
        f"one to the next: {spread_text(bursts['between'])}"
    )


def _relay_lines(shop: ShopJson) -> list[str]:
    lines = [
        "Outbox relay latency, commit to consumer: now - occurred_at in the consumer's handler",
        '(a process of its own on topic "order", mesh.events.NatsEventBus, one event in flight);',
        "occurred_at is set when a service builds the event, just before the transaction that",
        "records it commits (OrderPlaced's: the order's create time, before its first write).",
        "Stages split it at JetStream's storage time (and, for the relay alone, at the commit",
        "and the publish call the writer noted):",
    ]
    for phase in shop["relay"]:
        lines += relay_phase_lines(phase)
    return lines


def shop_warning_lines(shop: ShopJson, where: Placement) -> list[str]:
    """What the reader should doubt: lost events, a server core that was not the
    limit, other work on the machine, threads off their core."""
    lines = []
    for phase in shop["relay"]:
        expected = phase["expected"]
        if expected is not None and phase["events"] < expected:
            lines.append(
                f"WARNING: the consumer got {phase['events']} of the {expected} events of "
                f"'{phase['phase']}'"
            )
    for row in shop["rows"]:
        if where.server_cpus is not None:
            busy = sum(row["core_busy_pct"][str(c)] for c in where.server_cpus)
            if busy < SATURATED_SERVER_CORE:
                lines.append(
                    f"WARNING: the server core was only {busy:.0f}% busy during "
                    f"'{row['name']}': it was not the limit"
                )
        if row["other_cpu_pct"] > DISTURBED_OTHER_CPU:
            lines.append(
                f"WARNING: other processes used {row['other_cpu_pct']:.0f}% of a core during "
                f"'{row['name']}': its figures are likely disturbed"
            )
    for label, check in shop["placement_check"].items():
        if check["threads_elsewhere"]:
            lines.append(
                f"WARNING: {check['threads_elsewhere']} of the {check['threads']} threads of "
                f"{label} (pid {check['pid']}) may run off core {check['cpus']}"
            )
    return lines


def print_shop_report(shop: ShopJson, where: Placement) -> None:
    s = shop["settings"]
    print()
    print(
        f"Shop rows: GetProduct and PlaceOrder in one mesh of five instances and NATS, "
        f"interleaved over {s['rounds']} rounds, per subject and round {s['warmup_s']:g} s "
        f"warm-up + {s['window_s']:g} s measured; {s['workers']} load processes x "
        f"{s['concurrency_per_worker']} in flight ({s['in_flight']}: {s['in_flight_note']})"
    )
    print(f"Placement: {s['placement']}")
    if shop["placement_check"]:
        print(placement_check_line(shop["placement_check"]))
    for line in [
        *_rows_lines(shop, where.cores),
        "",
        *_ratio_lines(shop),
        *_idle_lines(shop),
        "",
        *_relay_lines(shop),
        "",
        *shop_warning_lines(shop, where),
        "Shop goals:",
        *(goal_line(goal) for goal in shop["goals"]),
    ]:
        print(line)
