"""CPU time of processes, of each core and of the whole machine, read from /proc.

A process's utime+stime in /proc/<pid>/stat covers all of its threads (gRPC's own
threads, the tracer's export thread, asyncio.to_thread workers), which is what a
saturation check needs. /proc/stat gives the busy time of each core and of the
machine; with tick-based accounting (this VM's kernel) softirq work, such as the
loopback network stack, is charged to the process it interrupted, so the processes'
times add up to the machine's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CpuSnapshot",
    "busy_seconds",
    "process_cpu_seconds",
    "snapshot",
    "thread_sched_seconds",
]

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU seconds of process `pid` so far (all threads), or of its
    thread `tid` only; 0 if gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces or parentheses: parse after its last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of the whole line
    return (utime + stime) / _TICK


def busy_seconds() -> tuple[float, dict[int, float]]:
    """CPU seconds so far the machine (summed over its cores) and each core spent not
    idle (nor waiting for I/O), from /proc/stat; steal time counts as busy."""
    machine = 0.0
    cores: dict[int, float] = {}
    with open("/proc/stat") as handle:
        for line in handle:
            if not line.startswith("cpu"):
                break
            name, *values = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
            busy = (user + nice + system + irq + softirq + steal) / _TICK
            if name == "cpu":
                machine = busy
            else:
                cores[int(name[3:])] = busy
    return machine, cores


def thread_sched_seconds(pid: int, tid: int) -> tuple[float, float]:
    """Seconds thread `tid` of `pid` has run on a CPU, and has waited, runnable, for
    one (from /proc/<pid>/task/<tid>/schedstat); zeros if gone. Waiting shows a
    thread that wanted to work but found its core(s) busy."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
            run_ns, wait_ns = handle.read().split()[:2]
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    machine: float
    cores: Mapping[int, float]
    processes: Mapping[int, float]
    main_threads: Mapping[int, tuple[float, float]]  # pid -> (ran, waited) seconds

    def process_seconds(self, later: CpuSnapshot, pid: int) -> float:
        """CPU seconds `pid` used from this snapshot to `later`."""
        return later.processes.get(pid, 0.0) - self.processes.get(pid, 0.0)

    def main_thread_seconds(self, later: CpuSnapshot, pid: int) -> tuple[float, float]:
        """Seconds the main thread of `pid` ran, and waited for a core, until `later`."""
        ran0, waited0 = self.main_threads.get(pid, (0.0, 0.0))
        ran1, waited1 = later.main_threads.get(pid, (0.0, 0.0))
        return ran1 - ran0, waited1 - waited0


def snapshot(pids: Iterable[int], main_thread_of: Iterable[int] = ()) -> CpuSnapshot:
    """CPU seconds so far of the machine, of each core and of each of `pids`, and the
    scheduler's run and wait times of the main thread (whose id is the pid: the one
    running the asyncio loop) of each of `main_thread_of`."""
    machine, cores = busy_seconds()
    return CpuSnapshot(
        at=time.monotonic(),
        machine=machine,
        cores=cores,
        processes={pid: process_cpu_seconds(pid) for pid in pids},
        main_threads={pid: thread_sched_seconds(pid, pid) for pid in main_thread_of},
    )
