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
    "children_named",
    "context_switches",
    "name_and_parent",
    "process_cpu_seconds",
    "snapshot",
    "switches_in_status",
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


def name_and_parent(stat: str) -> tuple[str, int]:
    """The command name and parent pid in a /proc/<pid>/stat line."""
    # The name is between the first '(' and the last ')': it may hold either.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    parent = int(stat[stat.rindex(")") + 2 :].split()[1])  # field 4: after the state
    return name, parent


def children_named(pid: int, name: str) -> list[int]:
    """Pids of the running children of `pid` whose command name is `name` (a sidecar's
    Envoy, started by its app), in ascending order."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                child_name, parent = name_and_parent(handle.read())
        except (OSError, ValueError):
            continue  # gone meanwhile
        if parent == pid and child_name == name:
            found.append(int(entry))
    return sorted(found)


def context_switches(pid: int) -> int:
    """Voluntary plus involuntary context switches so far of every thread of `pid` (of
    those alive now); 0 if gone. A thread that sleeps and wakes once per call does not
    batch its work: its CPU per call is then much higher."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as handle:
                total += switches_in_status(handle.read())
        except OSError:
            continue  # the thread ended meanwhile
    return total


def switches_in_status(status: str) -> int:
    """Voluntary plus involuntary context switches in a /proc/.../status text."""
    total = 0
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            total += int(value)
    return total


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
