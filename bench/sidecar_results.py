"""The sidecar data plane's figures, from the windows the driver measured: each path's
row at each load level, calls/s through two sidecars against the proxyless path, the
p50 the two hops add at low load, the Envoys' CPU per call, and the goals. Pure
functions of the figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.load import idle_percent
from bench.results import SubjectResult, ratio
from bench.summary import GoalJson, PropagationJson, SidecarJson, SidecarRowJson

__all__ = [
    "CALLER_ENVOY",
    "CHANGES",
    "EXTRA_SIDECARS",
    "INBOUND_ENVOY",
    "LOW_LOAD_IN_FLIGHT",
    "P50_ADDED_GOAL_MS",
    "RATIO_GOAL",
    "Level",
    "SidecarRun",
    "low_load_slots",
    "sidecar_row",
    "sidecar_summary",
]

RATIO_GOAL = 0.7  # calls/s through two sidecars / proxyless, at the run's load
P50_ADDED_GOAL_MS = 1.0  # what the two hops may add to the p50 at low load
LOW_LOAD_IN_FLIGHT = 16  # calls in flight at low load, all load processes together
CHANGES = 20  # registry changes timed: register, deregister, register, ...
EXTRA_SIDECARS = 5  # Envoys started for them, besides the two of the sidecar path

# Labels of the tracked processes in the windows (bench.load.Window.tracked_cpu).
INBOUND_ENVOY = "inbound envoy"
CALLER_ENVOY = "caller envoy"


def low_load_slots(workers: int) -> int:
    """Calls in flight per load process for LOW_LOAD_IN_FLIGHT in all (at least 1)."""
    return max(1, LOW_LOAD_IN_FLIGHT // workers)


@dataclass(frozen=True)
class Level:
    """Both paths at one load: one window per round each."""

    in_flight: int  # all load processes together
    proxyless: SubjectResult
    sidecar: SubjectResult

    def p50_added_ms(self) -> float:
        """Pooled p50 through the sidecars minus the proxyless one."""
        return self.sidecar.latency_ms(0.5) - self.proxyless.latency_ms(0.5)

    def p50_added_ms_per_round(self) -> list[float]:
        through = self.sidecar.latency_ms_per_round(0.5)
        direct = self.proxyless.latency_ms_per_round(0.5)
        return [s - p for s, p in zip(through, direct, strict=True)]


@dataclass(frozen=True)
class SidecarRun:
    """The run's load (the calls/s goal's), low load (the p50 goal's), and a light
    load of one call in flight per load process (what the hops cost in time alone)."""

    load: Level
    low: Level
    light: Level

    @property
    def levels(self) -> tuple[Level, Level, Level]:
        return (self.load, self.low, self.light)

    @property
    def rows(self) -> list[SubjectResult]:
        return [row for level in self.levels for row in (level.proxyless, level.sidecar)]


def sidecar_row(row: SubjectResult, in_flight: int, cores: Sequence[int]) -> SidecarRowJson:
    """A row's figures; its "server" is the product instance's app process."""
    return {
        "row": row.row,
        "name": row.name,
        "detail": row.detail,
        "in_flight": in_flight,
        "calls": row.calls,
        "measured_s": row.duration,
        "calls_per_s": row.calls_per_second,
        "calls_per_s_per_round": row.per_round,
        "p50_ms": row.latency_ms(0.5),
        "p99_ms": row.latency_ms(0.99),
        "p50_ms_per_round": row.latency_ms_per_round(0.5),
        "errors": row.errors,
        "error_samples": row.error_samples,
        "app_cpu_us_per_call": row.us_per_call(row.server_cpu),
        "app_loop_thread_idle_pct": idle_percent(row.percent(row.loop_ran + row.loop_waited)),
        "inbound_envoy_cpu_us_per_call": row.us_per_call(row.tracked_cpu(INBOUND_ENVOY)),
        "caller_envoy_cpu_us_per_call": row.us_per_call(row.tracked_cpu(CALLER_ENVOY)),
        "inbound_envoy_switches_per_call": row.per_call(row.tracked_switches(INBOUND_ENVOY)),
        "caller_envoy_switches_per_call": row.per_call(row.tracked_switches(CALLER_ENVOY)),
        "client_cpu_us_per_call": row.us_per_call(sum(row.client_cpu)),
        "core_busy_pct": {str(core): row.percent(row.core_cpu(core)) for core in cores},
        "other_cpu_pct": row.percent(row.other_cpu),
    }


def _goal(figure: str, comparison: str, bound: float, value: float) -> GoalJson:
    met = value >= bound if comparison == ">=" else value <= bound  # NaN never meets
    return {"figure": figure, "comparison": comparison, "bound": bound, "value": value, "met": met}


def _goals(run: SidecarRun, propagation: PropagationJson) -> list[GoalJson]:
    calls = ratio(run.load.sidecar, run.load.proxyless)
    return [
        _goal(
            f"calls/s through two sidecars / proxyless at {run.load.in_flight} in flight "
            f"(rows {calls.label}), median over rounds",
            ">=",
            RATIO_GOAL,
            calls.median,
        ),
        _goal(
            f"p50 added by the two sidecars at {run.low.in_flight} in flight, ms",
            "<=",
            P50_ADDED_GOAL_MS,
            run.low.p50_added_ms(),
        ),
        _goal(
            "etcd change to every sidecar's /clusters, median ms",
            "<=",
            propagation["median_goal_ms"],
            propagation["median_ms"],
        ),
        _goal(
            "etcd change to every sidecar's /clusters, max ms",
            "<=",
            propagation["max_goal_ms"],
            propagation["max_ms"],
        ),
    ]


def sidecar_summary(
    run: SidecarRun,
    *,
    rounds: int,
    windows_s: Sequence[float],
    warmups_s: Sequence[float],
    placement: str,
    cores: Sequence[int],
    propagation: PropagationJson,
    app_handled: int,
) -> SidecarJson:
    """What `--json` holds under "sidecar". `windows_s` and `warmups_s`: per level."""
    through = run.load.sidecar
    envoys = through.tracked_cpu(INBOUND_ENVOY) + through.tracked_cpu(CALLER_ENVOY)
    return {
        "settings": {
            "rounds": rounds,
            "window_s": list(windows_s),
            "warmup_s": list(warmups_s),
            "in_flight": [level.in_flight for level in run.levels],
            "order_each_round": [row.name for row in run.rows],
            "placement": placement,
        },
        "rows": [
            sidecar_row(row, level.in_flight, cores)
            for level in run.levels
            for row in (level.proxyless, level.sidecar)
        ],
        "ratio": ratio(through, run.load.proxyless).as_json(),
        "p50_added_ms": run.low.p50_added_ms(),
        "p50_added_ms_per_round": run.low.p50_added_ms_per_round(),
        "p50_added_light_load_ms": run.light.p50_added_ms(),
        "envoy_cpu_us_per_call": through.us_per_call(envoys),
        "app_handled_ok_during_load": app_handled,
        "propagation": propagation,
        "goals": _goals(run, propagation),
    }
