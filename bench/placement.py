"""Where the benchmark's processes run: the servers on one core, the load on another.

Left to itself, the scheduler moves the server under test, the load processes and the
driver between the two cores of the benchmark machine from one moment to the next, so
a measurement depends on how they happened to share them. Pinned, the servers get a
core of their own (only the one under load is busy: the others idle beside it) and
the driver, the load processes and etcd share the other.

Affinity is inherited: a process gets its parent's at fork, a thread its creating
thread's. So a server is launched while the driver's thread is pinned to the server
core (what `taskset -c 1 python ...` does), and every thread it ever starts, gRPC's
included, stays there; the driver's thread then goes back to the load core.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from bench.summary import PlacementJson

__all__ = [
    "Placement",
    "cpu_list",
    "launching_on",
    "parse_cpu_list",
    "pin_threads",
    "plan",
    "stray_threads",
    "thread_cpus",
]


@dataclass(frozen=True)
class Placement:
    """The core(s) of the servers and of the load side; None for both if not pinned."""

    cores: tuple[int, ...]  # the cores the benchmark may use
    server_cpus: frozenset[int] | None
    load_cpus: frozenset[int] | None
    note: str  # why not pinned, or ""

    @property
    def pinned(self) -> bool:
        return self.server_cpus is not None

    def as_json(self) -> PlacementJson:
        return {
            "cores": list(self.cores),
            "pinned": self.pinned,
            "server_cpus": sorted(self.server_cpus or ()),
            "load_cpus": sorted(self.load_cpus or ()),
            "note": self.note,
        }


def cpu_list(cpus: frozenset[int] | set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def plan(enabled: bool) -> Placement:
    """Servers on the second core this process may use, the load side on the first."""
    available = tuple(sorted(os.sched_getaffinity(0)))
    if not enabled:
        return Placement(
            available, None, None, "not pinned (--no-pin): the scheduler places everything"
        )
    if len(available) < 2:
        return Placement(
            available,
            None,
            None,
            f"not pinned: only {len(available)} core available to this process",
        )
    return Placement(available, frozenset({available[1]}), frozenset({available[0]}), "")


def pin_threads(pid: int, cpus: frozenset[int]) -> None:
    """Set the affinity of every thread `pid` has now; threads it starts later inherit
    it from their creator. Threads that end meanwhile are skipped."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def launching_on(cpus: frozenset[int] | None) -> Iterator[None]:
    """Within the block, processes this thread starts begin life on `cpus` (the calling
    thread itself runs there meanwhile); a no-op for None."""
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def thread_cpus(pid: int) -> dict[str, int]:
    """How many threads of `pid` may run on which cores: {"1": 23} means all 23 of its
    threads on core 1 only (Cpus_allowed_list of /proc/<pid>/task/*/status)."""
    found: dict[str, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as handle:
                for line in handle:
                    if line.startswith("Cpus_allowed_list:"):
                        allowed = line.split(":", 1)[1].strip()
                        found[allowed] = found.get(allowed, 0) + 1
                        break
        except OSError:
            continue
    return found


def parse_cpu_list(text: str) -> frozenset[int]:
    """The cores of a kernel CPU list such as "0-1,3"."""
    cpus: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            first, last = part.split("-")
            cpus.update(range(int(first), int(last) + 1))
        elif part:
            cpus.add(int(part))
    return frozenset(cpus)


def stray_threads(pid: int, cpus: frozenset[int]) -> tuple[int, int]:
    """(threads of `pid`, how many of them may run elsewhere than on `cpus`)."""
    counts = thread_cpus(pid)
    stray = sum(n for allowed, n in counts.items() if parse_cpu_list(allowed) != cpus)
    return sum(counts.values()), stray
