"""The edge rows' figures, from the windows bench.edge measured: each subject's row, the
ratios (the edge against Envoy and against direct gRPC, each server candidate
against the edge's own server), and the goals. Pure functions of the figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.load import idle_percent
from bench.results import SubjectResult, ratio
from bench.summary import (
    EdgeJson,
    EdgeRowJson,
    EdgeSettingsJson,
    GoalJson,
    JsonCaseJson,
    RatioJson,
    ThreadPlacement,
)

__all__ = [
    "BACKEND",
    "CALLS_GOAL",
    "P99_GOAL",
    "EdgeSubject",
    "edge_goals",
    "edge_row",
    "edge_summary",
    "p99_over",
]

CALLS_GOAL = 0.8  # the edge's calls/s / Envoy's, median over rounds: at least
P99_GOAL = 1.5  # the edge's p99 / Envoy's, pooled over rounds: at most
BACKEND = "backend"  # label of the backend among a window's tracked processes


@dataclass(frozen=True)
class EdgeSubject:
    """A row and how it was loaded. `key` names it in the ratios ("direct_grpc",
    "envoy", "edge", or a candidate server's name)."""

    key: str
    result: SubjectResult
    load: str
    in_flight: int
    python_front: bool  # the front's main thread runs an asyncio loop
    behind_front: bool  # the backend is another process, behind the front
    candidate: bool = False  # the edge's Site on another HTTP server


def _per_call(result: SubjectResult, seconds: float) -> float:
    return result.us_per_call(seconds)


def edge_row(subject: EdgeSubject, cores: Sequence[int]) -> EdgeRowJson:
    r = subject.result
    front = r.server_cpu
    backend = r.tracked_cpu(BACKEND) if subject.behind_front else front
    load = sum(r.client_cpu)
    loop_idle = (
        idle_percent(r.percent(r.loop_ran + r.loop_waited)) if subject.python_front else None
    )
    return {
        "row": r.row,
        "name": r.name,
        "detail": r.detail,
        "load": subject.load,
        "candidate": subject.candidate,
        "in_flight": subject.in_flight,
        "calls": r.calls,
        "measured_s": r.duration,
        "calls_per_s": r.calls_per_second,
        "calls_per_s_per_round": r.per_round,
        "p50_ms": r.latency_ms(0.5),
        "p90_ms": r.latency_ms(0.9),
        "p99_ms": r.latency_ms(0.99),
        "p99_ms_per_round": r.latency_ms_per_round(0.99),
        "max_ms": 1000.0 * r.latencies[-1] if r.latencies else None,
        "errors": r.errors,
        "error_samples": r.error_samples,
        "front_cpu_pct": r.percent(front),
        "front_cpu_us_per_call": _per_call(r, front),
        "front_loop_thread_idle_pct": loop_idle,
        "backend_cpu_pct": r.percent(backend),
        "backend_cpu_us_per_call": _per_call(r, backend),
        "server_side_cpu_us_per_call": _per_call(
            r, front + backend if subject.behind_front else front
        ),
        "load_cpu_pct": r.percent(load),
        "load_cpu_us_per_call": _per_call(r, load),
        "core_busy_pct": {str(core): r.percent(r.core_cpu(core)) for core in cores},
        "other_cpu_pct": r.percent(r.other_cpu),
    }


def p99_over(subject: SubjectResult, baseline: SubjectResult) -> float:
    """Pooled p99 of `subject` over `baseline`'s (lower is better for the subject)."""
    base = baseline.latency_ms(0.99)
    return subject.latency_ms(0.99) / base if base > 0 else math.nan


def _p99_per_round(subject: SubjectResult, baseline: SubjectResult) -> list[float]:
    return [
        s / b if b > 0 else math.nan
        for s, b in zip(
            subject.latency_ms_per_round(0.99), baseline.latency_ms_per_round(0.99), strict=True
        )
    ]


def _goal(figure: str, comparison: str, bound: float, value: float) -> GoalJson:
    met = value >= bound if comparison == ">=" else value <= bound  # NaN never meets
    return {"figure": figure, "comparison": comparison, "bound": bound, "value": value, "met": met}


def edge_goals(edge: SubjectResult, envoy: SubjectResult) -> list[GoalJson]:
    calls = ratio(edge, envoy)
    return [
        _goal(
            f"calls/s the edge / Envoy (rows {calls.label}), median over rounds",
            ">=",
            CALLS_GOAL,
            calls.median,
        ),
        _goal(
            f"p99 the edge / Envoy (rows {calls.label}), pooled over rounds",
            "<=",
            P99_GOAL,
            p99_over(edge, envoy),
        ),
    ]


def edge_summary(
    subjects: Sequence[EdgeSubject],
    *,
    settings: EdgeSettingsJson,
    versions: Mapping[str, str],
    cores: Sequence[int],
    same_json: bool,
    json_candidates: Sequence[JsonCaseJson],
    placement_check: Mapping[str, ThreadPlacement] | None = None,
) -> EdgeJson:
    """What `--json` holds under "edge". `subjects` in the rounds' order, the first
    three direct gRPC, Envoy and the edge, then the candidate servers."""
    direct, envoy, edge, *candidates = subjects
    assert all(c.candidate for c in candidates), "the candidates come after the edge"
    pairs = [
        ("edge_vs_envoy", edge, envoy),
        ("edge_vs_direct_grpc", edge, direct),
        ("envoy_vs_direct_grpc", envoy, direct),
        *((f"{c.key}_vs_edge", c, edge) for c in candidates),
    ]
    ratios: dict[str, RatioJson] = {key: ratio(s.result, b.result).as_json() for key, s, b in pairs}
    return {
        "settings": settings,
        "versions": dict(versions),
        "rows": [edge_row(s, cores) for s in subjects],
        "ratios": ratios,
        "p99_edge_over_envoy": p99_over(edge.result, envoy.result),
        "p99_edge_over_envoy_per_round": _p99_per_round(edge.result, envoy.result),
        "same_json": same_json,
        "placement_check": dict(placement_check or {}),
        "json_candidates": list(json_candidates),
        "goals": edge_goals(edge.result, envoy.result),
    }
