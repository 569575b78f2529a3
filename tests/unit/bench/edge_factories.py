"""Hand-made edge rows with round figures."""

from __future__ import annotations

from collections.abc import Sequence

from bench.edge import DIRECT, EDGE, ENVOY, candidate_name
from bench.edge_json import json_case
from bench.edge_results import BACKEND, EdgeSubject, edge_summary
from bench.load import Window
from bench.results import SubjectResult
from bench.summary import EdgeJson, EdgeSettingsJson, JsonCaseJson
from tests.unit.bench.factories import make_window

HTTP_LOAD = "HTTP/1.1 keep-alive, 64 connections"


def edge_window(
    calls: int,
    *,
    latency: float,
    front: float,
    backend: float | None = None,
    load: float = 0.1,
    server_core: float = 1.0,
    other: float = 0.0,
) -> Window:
    """One second of `calls`, 100 latencies: the slowest 2 `latency` s (the p99), the
    other 98 a tenth of it (the p50); CPU seconds of the front, the backend behind it (None:
    none, the front is the backend), h2load and the server core as given."""
    tracked = {} if backend is None else {BACKEND: backend}
    ours = front + (backend or 0.0) + load
    return make_window(
        calls=calls,
        latencies=[latency / 10] * 98 + [latency] * 2,
        server_cpu=front,
        loop_ran=0.7,
        loop_waited=0.28,
        client_cpu=[load],
        machine_cpu=ours + other,
        core_cpu={0: load + other + 0.05, 1: server_core},
        tracked_cpu=tracked,
    )


def make_subject(
    key: str,
    row: int,
    name: str,
    rounds: Sequence[tuple[int, float]],
    *,
    front: float,
    backend: float | None,
    python_front: bool = True,
    candidate: bool = False,
    load: str = HTTP_LOAD,
    server_core: float = 1.0,
    other: float = 0.0,
) -> EdgeSubject:
    """A row with (calls, slowest latency) per one-second round."""
    windows = [
        edge_window(
            n, latency=t, front=front, backend=backend, server_core=server_core, other=other
        )
        for n, t in rounds
    ]
    return EdgeSubject(
        key,
        SubjectResult(row, name, "detail", windows),
        load,
        64,
        python_front=python_front,
        behind_front=backend is not None,
        candidate=candidate,
    )


def make_subjects(
    edge: Sequence[tuple[int, float]] = ((1600, 0.06), (1500, 0.06)),
    envoy: Sequence[tuple[int, float]] = ((1500, 0.05), (1500, 0.05)),
    *,
    candidates: bool = True,
    server_core: float = 1.0,
    other: float = 0.0,
) -> list[EdgeSubject]:
    """Direct gRPC at 3,000 calls/s (the backend 0.9 s a second), Envoy (0.45 s, the
    backend 0.55 s), the edge (0.5 s and 0.5 s), and the two candidate servers a tenth
    slower than the edge."""
    subjects = [
        make_subject(
            "direct_grpc", 1, DIRECT, ((3000, 0.03), (3000, 0.03)), front=0.9, backend=None,
            load="h2c, 1 connection x 64 streams",
        ),
        make_subject(
            "envoy", 2, ENVOY, envoy, front=0.45, backend=0.55, python_front=False,
            server_core=server_core, other=other,
        ),
        make_subject("edge", 3, EDGE, edge, front=0.5, backend=0.5, server_core=server_core),
    ]  # fmt: skip
    if candidates:
        for row, server in enumerate(("aiohttp", "uvicorn"), start=4):
            slower = [(round(n * 0.9), t) for n, t in edge]
            subjects.append(
                make_subject(
                    server,
                    row,
                    candidate_name(server),
                    slower,
                    front=0.55,
                    backend=0.45,
                    candidate=True,
                )
            )
    return subjects


def make_cases() -> list[JsonCaseJson]:
    return [
        json_case("shop.product.v1.GetProductResponse", "encode", 251, (10, 14, 9.6, 0.2, 4), True),
        json_case("shop.order.v1.PlaceOrderRequest", "decode", 206, (28, 30, 27, 0.5, 2.5), True),
    ]


def make_settings(subjects: Sequence[EdgeSubject]) -> EdgeSettingsJson:
    return {
        "rounds": len(subjects[0].result.windows),
        "window_s": 1.0,
        "warmup_s": 0.5,
        "in_flight": 64,
        "order_each_round": [s.result.name for s in subjects],
        "placement": "the backend, Envoy and every edge on core 1 (the servers'); h2load and "
        "the driver on core 0",
        "url": "GET /v1/products/sku-1",
        "skipped": {} if len(subjects) > 3 else {"aiohttp": "not installed"},
    }


def make_edge(subjects: Sequence[EdgeSubject] | None = None, *, same_json: bool = True) -> EdgeJson:
    rows = list(subjects) if subjects is not None else make_subjects()
    return edge_summary(
        rows,
        settings=make_settings(rows),
        versions={"envoy": "1.40.0", "h2load": "1.52.0"},
        cores=(0, 1),
        same_json=same_json,
        json_candidates=make_cases(),
        placement_check={
            "backend": {"pid": 41, "cpus": "1", "threads": 12, "threads_elsewhere": 0},
            "edge": {"pid": 43, "cpus": "1", "threads": 14, "threads_elsewhere": 0},
        },
    )
