"""The driver's sidecar part: six more windows at the end of every round, then the
registry-to-sidecars measurement once the load is over.

Each round ends with, in this order, the proxyless path and the path through two
sidecars at the run's load (workers x concurrency in flight), then both again at low
load (LOW_LOAD_IN_FLIGHT in flight) and at light load (one call in flight per load
process). Each pair is measured back to back, so a ratio within a round compares
windows seconds apart; the windows are shorter than the main ones (the driver's
Settings.sidecar_timing) to keep the run short. The proxyless path is
row 3's target (product-1's mTLS port, called as admin), so the sidecar rows take no
extra connection or process for their baseline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import cpu
from bench.load import LoadPool, Window
from bench.placement import Placement, cpu_list
from bench.propagation import measure_changes, propagation_json
from bench.results import SubjectResult
from bench.shopmesh import MeshEnvironment
from bench.sidecar import FAKE_SERVICE, PREFIX, SidecarPath, extra_sidecars
from bench.sidecar_results import (
    CALLER_ENVOY,
    CHANGES,
    EXTRA_SIDECARS,
    INBOUND_ENVOY,
    Level,
    SidecarRun,
    low_load_slots,
)
from bench.summary import PropagationJson
from mesh.envoy import cluster_name
from mesh.registry import EtcdClient

__all__ = ["SidecarRounds", "placement_text", "registry_changes"]

Tick = Callable[[str], Callable[[str], None]]  # Progress.ticker
Shown = Callable[[int, int, SubjectResult, Window], None]  # Progress-like window line


@dataclass(frozen=True)
class _Slot:
    """One of the windows of a round."""

    result: SubjectResult
    target: int  # index in the load pool's targets
    server_pid: int
    slots: int  # calls in flight per load process
    warmup: float
    window: float


class SidecarRounds:
    """The sidecar windows of each round (both paths at each level, see SidecarRun),
    and their results (`run`). `timing`: (warm-up, measured) seconds per level."""

    def __init__(
        self,
        path: SidecarPath,
        *,
        proxyless_target: int,
        proxyless_pid: int,
        proxyless_instance: str,
        sidecar_target: int,
        workers: int,
        concurrency: int,
        timing: Sequence[tuple[float, float]],
        first_row: int,
        other_pids: Sequence[int],
    ) -> None:
        direct = f"client -> {proxyless_instance}'s mTLS port"
        through = f"client -> {path.caller.label} -> {path.inbound.label} -> app (Unix socket)"
        rows = iter(range(first_row, first_row + 6))

        def level(slots: int) -> Level:
            n = workers * slots
            return Level(
                n,
                SubjectResult(next(rows), f"proxyless mTLS, {n} in flight", direct),
                SubjectResult(next(rows), f"through two sidecars, {n} in flight", through),
            )

        self.run = SidecarRun(level(concurrency), level(low_load_slots(workers)), level(1))
        product_pid = path.product.pid
        self._slots = [
            slot
            for one, (warmup, window) in zip(self.run.levels, timing, strict=True)
            for slot in (
                _Slot(one.proxyless, proxyless_target, proxyless_pid, one.in_flight // workers,
                      warmup, window),
                _Slot(one.sidecar, sidecar_target, product_pid, one.in_flight // workers,
                      warmup, window),
            )
        ]  # fmt: skip
        self._tracked = {INBOUND_ENVOY: path.inbound.pid, CALLER_ENVOY: path.caller.pid}
        self._pids = [*other_pids, path.controlplane_pid, product_pid]

    async def measure_round(
        self, pool: LoadPool, number: int, rounds: int, *, ticker: Tick, shown: Shown
    ) -> None:
        for slot in self._slots:
            measured = await pool.measure(
                slot.target,
                warmup=slot.warmup,
                duration=slot.window,
                server_pid=slot.server_pid,
                background_pids=[pid for pid in self._pids if pid != slot.server_pid],
                tick=ticker(f"round {number}/{rounds}, {slot.result.row} {slot.result.name}:"),
                concurrency=slot.slots,
                tracked=self._tracked,
            )
            slot.result.windows.append(measured)
            shown(number, rounds, slot.result, measured)


async def registry_changes(
    env: MeshEnvironment,
    path: SidecarPath,
    cpus: frozenset[int] | None,
    ticker: Tick,
) -> PropagationJson:
    """Start EXTRA_SIDECARS more Envoys (on `cpus`), then time CHANGES registry changes
    until all of the sidecars show each; with the CPU each process spent per change."""
    async with extra_sidecars(path, EXTRA_SIDECARS, cpus) as more:
        sidecars = [path.inbound, path.caller, *more]
        watched = {
            "control plane": [path.controlplane_pid],
            "etcd": [env.etcd.pid] if env.etcd.pid else [],
            "sidecars (all)": [s.pid for s in sidecars],
            "driver (polling)": [os.getpid()],
        }
        pids = [pid for group in watched.values() for pid in group]
        before = cpu.snapshot(pids)
        async with EtcdClient(env.etcd.endpoint) as etcd:
            timings = await measure_changes(
                etcd,
                PREFIX,
                [s.admin for s in sidecars],
                changes=CHANGES,
                cluster=cluster_name(FAKE_SERVICE, "v1"),
                service=FAKE_SERVICE,
                version="v1",
                tick=ticker("registry changes:"),
            )
        after = cpu.snapshot(pids)
    per_change = {
        label: 1000.0 * sum(before.process_seconds(after, pid) for pid in group) / CHANGES
        for label, group in watched.items()
    }
    return propagation_json(timings, [s.label for s in sidecars], per_change)


def placement_text(where: Placement, path: SidecarPath) -> str:
    """Where the sidecar part's processes ran."""
    if where.server_cpus is None or where.load_cpus is None:
        return where.note
    server, load = cpu_list(where.server_cpus), cpu_list(where.load_cpus)
    return (
        f"{path.product.instance_id}'s app and its Envoy on core {server} (the servers'); "
        f"{path.caller.label} (the load processes' sidecar) and the control plane on core "
        f"{load} (the load side's, with etcd); the {EXTRA_SIDECARS} more Envoys of the "
        f"registry test on core {server}"
    )
