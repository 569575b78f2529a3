"""Hand-made sidecar rows and registry timings with round figures."""

from __future__ import annotations

from collections.abc import Sequence

from bench.load import Window
from bench.propagation import ChangeTiming, propagation_json
from bench.results import SubjectResult
from bench.sidecar_results import CALLER_ENVOY, INBOUND_ENVOY, Level, SidecarRun, sidecar_summary
from bench.summary import PropagationJson, SidecarJson
from tests.unit.bench.factories import make_window

SIDECARS = ("product-3.envoy", "order-1.envoy")


def path_window(
    calls: int, *, latency: float, app: float, inbound: float = 0.0, caller: float = 0.0
) -> Window:
    """One second of `calls`, each taking `latency` s; CPU seconds of the app and of
    both Envoys as given (one context switch per call for each Envoy that worked)."""
    return make_window(
        calls=calls,
        latencies=[latency] * 10,
        server_cpu=app,
        loop_ran=0.6,
        loop_waited=0.38,
        client_cpu=[0.3, 0.3],
        machine_cpu=app + inbound + caller + 0.6,
        core_cpu={0: 0.4 + caller, 1: app + inbound},
        tracked_cpu={INBOUND_ENVOY: inbound, CALLER_ENVOY: caller},
        tracked_switches={
            INBOUND_ENVOY: calls if inbound else 0,
            CALLER_ENVOY: calls if caller else 0,
        },
    )


def level(
    first_row: int,
    in_flight: int,
    direct: Sequence[tuple[int, float]],
    through: Sequence[tuple[int, float]],
) -> Level:
    """Both paths at one load: (calls, latency) per round. The proxyless app spends 0.9
    s a second; through the sidecars the app 0.6 s and each Envoy 0.4 s."""
    proxyless = SubjectResult(
        first_row,
        f"proxyless mTLS, {in_flight} in flight",
        "direct",
        [path_window(n, latency=t, app=0.9) for n, t in direct],
    )
    sidecar = SubjectResult(
        first_row + 1,
        f"through two sidecars, {in_flight} in flight",
        "sidecars",
        [path_window(n, latency=t, app=0.6, inbound=0.4, caller=0.4) for n, t in through],
    )
    return Level(in_flight, proxyless, sidecar)


def make_run() -> SidecarRun:
    """Two rounds: 3000 vs 2400 then 2000 calls/s at 64 in flight (ratios 0.8, 0.667);
    p50 5 vs 5.5 ms at 16 in flight, 1 vs 1.4 ms at 2."""
    return SidecarRun(
        level(6, 64, [(3000, 0.020)] * 2, [(2400, 0.025), (2000, 0.030)]),
        level(8, 16, [(3000, 0.005)] * 2, [(2000, 0.0055)] * 2),
        level(10, 2, [(1000, 0.001)] * 2, [(800, 0.0014)] * 2),
    )


def make_timings(everywhere_ms: Sequence[float | None]) -> list[ChangeTiming]:
    """One change per value: the first sidecar sees it at half the time, the second at
    the time (None: never)."""
    return [
        ChangeTiming(
            "register" if i % 2 == 0 else "deregister",
            (None if ms is None else ms / 2000, None if ms is None else ms / 1000),
        )
        for i, ms in enumerate(everywhere_ms)
    ]


def make_propagation(everywhere_ms: Sequence[float | None] = (20.0, 30.0, 40.0)) -> PropagationJson:
    return propagation_json(
        make_timings(everywhere_ms), SIDECARS, {"control plane": 10.0, "sidecars (all)": 4.0}
    )


def make_sidecar(
    run: SidecarRun | None = None, propagation: PropagationJson | None = None
) -> SidecarJson:
    return sidecar_summary(
        run or make_run(),
        rounds=2,
        windows_s=[2.0, 1.0, 1.0],
        warmups_s=[0.5, 0.25, 0.25],
        placement="product-3 on core 1",
        cores=(0, 1),
        propagation=propagation or make_propagation(),
        app_handled=12_000,
    )
