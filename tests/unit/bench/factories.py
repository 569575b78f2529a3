"""Hand-made windows and subjects with round figures, so each test can state its answer."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import replace

from bench.driver import BARE_PRODUCT, MTLS, PLAIN, SHOPMESH, TRACED, Settings, summarize
from bench.load import Window
from bench.placement import Placement
from bench.results import SubjectResult
from bench.summary import Checks, Summary

SUBJECT_NAMES = (PLAIN, MTLS, SHOPMESH, TRACED, BARE_PRODUCT)


def make_window(
    *,
    calls: int = 1000,
    duration: float = 1.0,
    elapsed: float | None = None,
    latencies: Sequence[float] = (),
    errors: int = 0,
    error_samples: Sequence[str] = (),
    server_cpu: float = 0.0,
    loop_ran: float = 0.0,
    loop_waited: float = 0.0,
    client_cpu: Sequence[float] = (0.0,),
    driver_cpu: float = 0.0,
    background_cpu: float = 0.0,
    machine_cpu: float = 0.0,
    core_cpu: dict[int, float] | None = None,
    tracked_cpu: dict[str, float] | None = None,
    tracked_switches: dict[str, int] | None = None,
) -> Window:
    """A window of `calls` over `duration` seconds (CPU measured over `elapsed`, the
    same by default); every CPU figure is 0 unless given."""
    return Window(
        duration=duration,
        elapsed=duration if elapsed is None else elapsed,
        calls=calls,
        errors=errors,
        error_samples=list(error_samples),
        latencies=array("d", latencies),
        server_cpu=server_cpu,
        server_loop_ran=loop_ran,
        server_loop_waited=loop_waited,
        client_cpu=list(client_cpu),
        driver_cpu=driver_cpu,
        background_cpu=background_cpu,
        machine_cpu=machine_cpu,
        core_cpu={} if core_cpu is None else core_cpu,
        tracked_cpu={} if tracked_cpu is None else tracked_cpu,
        tracked_switches={} if tracked_switches is None else tracked_switches,
    )


def make_subject(*windows: Window, row: int = 1, name: str = "subject") -> SubjectResult:
    return SubjectResult(row, name, "detail", list(windows))


def subject_at(calls_per_round: Sequence[int], *, row: int = 1) -> SubjectResult:
    """A subject whose round i completed calls_per_round[i] calls in one second."""
    return make_subject(*(make_window(calls=n) for n in calls_per_round), row=row)


PINNED = Placement(cores=(0, 1), server_cpus=frozenset({1}), load_cpus=frozenset({0}), note="")
UNPINNED = Placement(cores=(0, 1), server_cpus=None, load_cpus=None, note="not pinned (--no-pin)")
SETTINGS = Settings(rounds=2, window=1.0, warmup=0.5, workers=2, concurrency=32, pin=True)

# Calls per one-second round of each row, in the driver's order: echo, echo + mTLS,
# ShopMesh, ShopMesh traced, the product servicer alone.
CALLS = ((1000, 1000), (950, 950), (900, 850), (600, 570), (1000, 1000))


def quiet_window(calls: int) -> Window:
    """One second that raises no warning: the server's loop busy 98% of it, the load
    processes and the cores well below their limits, nobody else on the machine."""
    return make_window(
        calls=calls,
        latencies=[0.01] * 10,
        server_cpu=1.0,
        loop_ran=0.7,
        loop_waited=0.28,
        client_cpu=[0.4, 0.4],
        machine_cpu=1.8,
        core_cpu={0: 0.8, 1: 1.0},
    )


def five_subjects(calls: Sequence[Sequence[int]] = CALLS) -> list[SubjectResult]:
    return [
        SubjectResult(row, name, "detail", [quiet_window(n) for n in rounds])
        for row, (name, rounds) in enumerate(zip(SUBJECT_NAMES, calls, strict=True), start=1)
    ]


def make_checks(*, threads_elsewhere: int = 0, handled: int = 1000, spans: int = 10) -> Checks:
    return {
        "instances": [
            {
                "subject": SHOPMESH,
                "instance_id": "product-1",
                "trace_sample_ratio": 0.01,
                "authz_denies_product_identity": True,
                "metrics_handled_ok_during_load": handled - 1,
                "metrics_handled_ok_total": handled,
                "trace_spans_get_product": spans,
                "trace_file": "product-1.jsonl",
            }
        ],
        "placement": {
            "echo": {"pid": 41, "cpus": "1", "threads": 8, "threads_elsewhere": threads_elsewhere},
            "driver": {"pid": 40, "cpus": "0", "threads": 10, "threads_elsewhere": 0},
        },
    }


def make_summary(
    calls: Sequence[Sequence[int]] = CALLS, where: Placement = PINNED, checks: Checks | None = None
) -> Summary:
    settings = replace(SETTINGS, rounds=len(calls[0]))
    return summarize(five_subjects(calls), settings, where, checks or make_checks())
