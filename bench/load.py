"""The load generator: N worker processes, each keeping C unary calls in flight (the
pool's C, or another for one window).

Each worker (a "spawn" process, so it shares nothing with the driver) runs uvloop and
one grpc.aio channel per target (plaintext, or mTLS as a mesh identity; a target may
name the :authority to send, as a sidecar's outbound socket needs), and calls a
target's method with a pre-serialized request through a raw-bytes multicallable (no
serializers), so the client spends as little as it can per call.

The workers live for the whole run (`LoadPool`): they connect to every target once,
make one successful call on each, and then measure window after window, each time on
the target the driver names. Starting them per window would cost a spawn, the gRPC
import and a TLS handshake each time (~0.5 s per window, 10 s over a default run)
and measure each window on fresh connections; kept alive, a window only needs its
warm-up. Between windows a worker's channels stay open and idle.

For each window the driver sends every worker one schedule on the machine-wide
monotonic clock: load from `start`, measure from `measure_start` to `measure_end`.
Calls that complete inside the measured window are counted, with their latency;
warm-up calls and calls still in flight at the end are not. At the window's edges the
driver reads from /proc the CPU time of the server under load, of each worker, of
itself, of the idle servers, of any process it names (the sidecars' Envoys), of each
core and of the whole machine, so the report can show which side was the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import signal
import time
import traceback
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from bench import cpu
from bench.summary import WindowJson

if TYPE_CHECKING:
    import grpc

__all__ = [
    "LoadFailed",
    "LoadPool",
    "Target",
    "Window",
    "idle_percent",
    "percent_of_core",
    "percentile",
    "worker_main",
]

Report = Callable[[str], None]

MAX_ERROR_SAMPLES = 5
CALL_TIMEOUT = 10.0  # deadline of each call
CONNECT_TIMEOUT = 30.0  # per target, when a worker starts


@dataclass(frozen=True)
class Target:
    """What the workers call, and how. Picklable: it crosses into spawned processes."""

    address: str
    method: str
    payload: bytes
    certs_dir: Path | None = None  # None: plaintext; else mTLS as `identity`
    identity: str = "admin"
    authority: str | None = None  # :authority to send (a sidecar routes on it); None: the address
    metadata: tuple[tuple[str, str], ...] = ()  # sent with every call


@dataclass(frozen=True)
class _Schedule:
    start: float
    measure_start: float
    measure_end: float
    slots: int  # calls each worker keeps in flight


@dataclass
class _WorkerResult:
    calls: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: array[float] = field(default_factory=lambda: array("d"))


@dataclass
class Window:
    """One measured window on one target, all workers merged. CPU figures are CPU
    seconds over `elapsed`, the time between the two /proc snapshots (which bracket
    the scheduled `duration` within a few milliseconds)."""

    duration: float  # scheduled measured seconds: calls are counted within them
    elapsed: float
    calls: int
    errors: int
    error_samples: list[str]
    latencies: array[float]  # seconds, in no particular order
    server_cpu: float  # the server under load, all its threads
    server_loop_ran: float  # its main (asyncio) thread: seconds on a core
    server_loop_waited: float  # ... and runnable but waiting for its core
    client_cpu: list[float]  # per load process
    driver_cpu: float  # this process
    background_cpu: float  # the idle servers and etcd, together
    machine_cpu: float  # every process on the machine
    core_cpu: dict[int, float]  # busy seconds per core
    tracked_cpu: dict[str, float] = field(default_factory=dict)  # named processes (sidecars)
    tracked_switches: dict[str, int] = field(default_factory=dict)  # their context switches

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.duration if self.duration > 0 else 0.0

    @property
    def server_loop_idle_pct(self) -> float:
        """Percent of the window the server's loop thread neither ran nor waited."""
        return idle_percent(self.percent(self.server_loop_ran + self.server_loop_waited))

    def percent(self, seconds: float) -> float:
        """CPU seconds over this window, in percent of one core."""
        return percent_of_core(seconds, self.elapsed)

    def as_json(self) -> WindowJson:
        """This window alone; CPU in percent of one core."""
        pct = self.percent
        ordered = sorted(self.latencies)
        return {
            "calls_per_s": self.calls_per_second,
            "calls": self.calls,
            "errors": self.errors,
            "p50_ms": 1000.0 * percentile(ordered, 0.5),
            "p99_ms": 1000.0 * percentile(ordered, 0.99),
            "server_cpu_pct": pct(self.server_cpu),
            "server_loop_thread_ran_pct": pct(self.server_loop_ran),
            "server_loop_thread_waited_for_cpu_pct": pct(self.server_loop_waited),
            "server_loop_thread_idle_pct": self.server_loop_idle_pct,
            "client_cpu_pct": pct(sum(self.client_cpu)),
            "driver_cpu_pct": pct(self.driver_cpu),
            "idle_servers_and_etcd_cpu_pct": pct(self.background_cpu),
            "core_busy_pct": {str(core): pct(busy) for core, busy in self.core_cpu.items()},
            "other_cpu_pct": pct(self.other_cpu),
        }

    @property
    def other_cpu(self) -> float:
        """Machine minus every process of the benchmark: someone else's work."""
        ours = (
            self.server_cpu
            + sum(self.client_cpu)
            + self.driver_cpu
            + self.background_cpu
            + sum(self.tracked_cpu.values())
        )
        return max(0.0, self.machine_cpu - ours)


def percentile(ordered: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile of an ascending sequence; NaN if empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def percent_of_core(seconds: float, elapsed: float) -> float:
    """CPU `seconds` used over `elapsed` wall-clock seconds, in percent of one core; NaN
    without elapsed time."""
    return 100.0 * seconds / elapsed if elapsed > 0 else math.nan


def idle_percent(busy_percent: float) -> float:
    """What is left of 100% once a thread's running and waiting (`busy_percent`) are
    taken off. At least 0: the /proc snapshots bracket the measured window only to a
    few milliseconds. NaN stays NaN (max() would turn it into 0: saturated)."""
    if math.isnan(busy_percent):
        return math.nan
    return max(0.0, 100.0 - busy_percent)


# --- worker side -------------------------------------------------------------------


def worker_main(
    targets: Sequence[Target],
    cpus: frozenset[int] | None,
    conn: Connection,
) -> None:
    """Entry point of a worker process: connect to every target, report "ready", then
    run each (target index, schedule) it is sent, with the schedule's number of call
    slots, and send back ("result", _WorkerResult), until it is sent None. On an
    error: ("failed", traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us, even on Ctrl-C
    if cpus is not None:  # inherited from the driver already; made explicit
        os.sched_setaffinity(0, cpus)
    import uvloop

    try:
        uvloop.run(_work(targets, conn))
    except BaseException:
        # The driver may be gone (interrupted): then there is nobody to tell.
        with contextlib.suppress(OSError):
            conn.send(("failed", traceback.format_exc()))
    conn.close()


async def _work(targets: Sequence[Target], conn: Connection) -> None:
    import grpc

    channels: list[grpc.aio.Channel] = []
    try:
        calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = []
        for target in targets:
            channel = _channel(target)
            channels.append(channel)
            # No serializers: bytes in and out.
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                target.method
            )
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
            # Fails here if the method does.
            await call(target.payload, timeout=CALL_TIMEOUT, metadata=_metadata(target))
            calls.append(call)
        conn.send(("ready", None))
        while True:
            order: tuple[int, _Schedule] | None = await asyncio.to_thread(conn.recv)
            if order is None:
                return
            index, schedule = order
            await asyncio.sleep(max(0.0, schedule.start - time.monotonic()))
            result = _WorkerResult()
            await asyncio.gather(
                *(
                    _keep_calling(
                        calls[index],
                        targets[index].payload,
                        _metadata(targets[index]),
                        schedule,
                        result,
                        grpc.aio.AioRpcError,
                    )
                    for _ in range(schedule.slots)
                )
            )
            conn.send(("result", result))
    finally:
        for channel in channels:
            await channel.close()


def _channel(target: Target) -> grpc.aio.Channel:
    import grpc

    options = [] if target.authority is None else [("grpc.default_authority", target.authority)]
    if target.certs_dir is None:
        return grpc.aio.insecure_channel(target.address, options=options)
    from mesh.identity import IdentityFiles, channel_credentials

    credentials = channel_credentials(IdentityFiles(target.certs_dir, target.identity))
    return grpc.aio.secure_channel(target.address, credentials, options=options)


def _metadata(target: Target) -> tuple[tuple[str, str], ...] | None:
    """None without metadata: the calls of the other targets stay exactly as they were."""
    return target.metadata or None


async def _keep_calling(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    payload: bytes,
    metadata: tuple[tuple[str, str], ...] | None,
    schedule: _Schedule,
    result: _WorkerResult,
    rpc_error: type[Exception],
) -> None:
    """One of the C call slots: call, record, repeat until the window closes."""
    clock = time.monotonic
    measure_start, measure_end = schedule.measure_start, schedule.measure_end
    latencies = result.latencies
    while True:
        started = clock()
        if started >= measure_end:
            return
        try:
            await call(payload, timeout=CALL_TIMEOUT, metadata=metadata)
        except rpc_error as error:
            ended = clock()
            if measure_start <= ended < measure_end:
                result.errors += 1
                if len(result.error_samples) < MAX_ERROR_SAMPLES:
                    result.error_samples.append(str(error).replace("\n", " ")[:300])
            await asyncio.sleep(0.01)  # a failing server must not turn this into a spin
            continue
        ended = clock()
        if measure_start <= ended < measure_end:
            result.calls += 1
            latencies.append(ended - started)


# --- driver side -------------------------------------------------------------------


class LoadFailed(Exception):
    """A worker could not start, connect, make its first call, or report."""


def _receive(conn: Connection, timeout: float, what: str) -> object:
    """The value of a worker's next ("ready" | "result", value) message; a "failed"
    message, silence or a closed pipe raise LoadFailed."""
    if not conn.poll(timeout):
        raise LoadFailed(f"no {what} from a load worker within {timeout:.0f}s")
    try:
        kind, value = conn.recv()
    except EOFError:
        raise LoadFailed(f"a load worker exited before sending {what}") from None
    if kind == "failed":
        raise LoadFailed(f"a load worker failed:\n{value}")
    return value


def _receive_result(conn: Connection) -> _WorkerResult:
    result = _receive(conn, CALL_TIMEOUT + 30, "results")
    if not isinstance(result, _WorkerResult):
        raise LoadFailed(f"a load worker sent {type(result).__name__} instead of its results")
    return result


async def _sleep_until(deadline: float, label: str, tick: Callable[[str], None]) -> None:
    """Sleep to `deadline` (monotonic), ticking a progress line every half second."""
    total = None
    while (left := deadline - time.monotonic()) > 0:
        total = total or left
        tick(f"{label} {total - left:4.1f}/{total:.1f} s")
        await asyncio.sleep(min(0.5, left))


class LoadPool:
    """`workers` load processes connected to every target, alive until the pool closes.

    `async with LoadPool(...) as pool:` starts them and waits until each has made a
    call on every target; `await pool.measure(i, ...)` runs one window on target i.
    On exit, however it comes (Ctrl-C included), every worker is ended.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        workers: int,
        concurrency: int,
        cpus: frozenset[int] | None,
    ) -> None:
        self.targets = list(targets)
        self.workers = workers
        self.concurrency = concurrency
        self.cpus = cpus
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    async def __aenter__(self) -> LoadPool:
        context = multiprocessing.get_context("spawn")
        try:
            for index in range(self.workers):
                parent, child = context.Pipe()
                worker = context.Process(
                    target=worker_main,
                    args=(self.targets, self.cpus, child),
                    name=f"bench-load-{index}",
                    daemon=True,
                )
                worker.start()
                child.close()
                self._processes.append(worker)
                self._conns.append(parent)
            timeout = CONNECT_TIMEOUT * len(self.targets) + 30
            for conn in self._conns:
                await asyncio.to_thread(_receive, conn, timeout, "ready")
        except BaseException:
            self._end(asked=False)
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(asked=kind is None)

    def _end(self, *, asked: bool) -> None:
        """Ask the workers to close their channels and exit (after a clean run), else
        terminate them. Ending them also ends any thread still polling their pipes:
        it then sees the pipe close."""
        if asked:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.send(None)
        for process in self._processes:
            if asked:
                process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()

    async def measure(
        self,
        index: int,
        *,
        warmup: float,
        duration: float,
        server_pid: int,
        background_pids: Sequence[int],
        tick: Callable[[str], None],
        concurrency: int | None = None,
        tracked: Mapping[str, int] | None = None,
    ) -> Window:
        """Load target `index` for `warmup` + `duration` seconds from every worker, each
        with `concurrency` calls in flight (default: the pool's); returns the measured
        window, with the CPU of each `tracked` process (label -> pid) on its own."""
        begin = time.monotonic() + 0.02
        slots = self.concurrency if concurrency is None else concurrency
        schedule = _Schedule(begin, begin + warmup, begin + warmup + duration, slots)
        for conn in self._conns:
            conn.send((index, schedule))
        driver = os.getpid()
        workers = self.pids
        tracked = dict(tracked or {})
        watched = [server_pid, driver, *workers, *background_pids, *tracked.values()]
        await _sleep_until(schedule.measure_start, "warm-up  ", tick)
        before = cpu.snapshot(watched, [server_pid])
        switches = {label: cpu.context_switches(pid) for label, pid in tracked.items()}
        await _sleep_until(schedule.measure_end, "measuring", tick)
        after = cpu.snapshot(watched, [server_pid])
        switches = {
            label: cpu.context_switches(pid) - switches[label] for label, pid in tracked.items()
        }
        tick("")
        results = [await asyncio.to_thread(_receive_result, conn) for conn in self._conns]

        latencies: array[float] = array("d")
        for result in results:
            latencies.extend(result.latencies)
        ran, waited = before.main_thread_seconds(after, server_pid)
        return Window(
            duration=schedule.measure_end - schedule.measure_start,
            elapsed=after.at - before.at,
            calls=sum(r.calls for r in results),
            errors=sum(r.errors for r in results),
            error_samples=[s for r in results for s in r.error_samples][:MAX_ERROR_SAMPLES],
            latencies=latencies,
            server_cpu=before.process_seconds(after, server_pid),
            server_loop_ran=ran,
            server_loop_waited=waited,
            client_cpu=[before.process_seconds(after, pid) for pid in workers],
            driver_cpu=before.process_seconds(after, driver),
            background_cpu=sum(before.process_seconds(after, pid) for pid in background_pids),
            machine_cpu=after.machine - before.machine,
            core_cpu={
                core: busy - before.cores.get(core, 0.0) for core, busy in after.cores.items()
            },
            tracked_cpu={
                label: before.process_seconds(after, pid) for label, pid in tracked.items()
            },
            tracked_switches=switches,
        )
