"""h2load (Debian's nghttp2-client) as the edge rows' load: its command line, what it
prints, and one measured window of it.

One h2load process per window, with one thread (a C client: at these rates it uses
a fraction of a core, which each window checks) and `connections` connections:
HTTP/1.1 keep-alive (`--h1`, one request in flight per connection) for the JSON
subjects, h2c with `streams` requests in flight per connection for gRPC, which
needs a length-prefixed body, `content-type: application/grpc` and `te: trailers`
(a Python gRPC server resets a call without it).

`-D` with `--warm-up-time`: h2load connects and loads during the warm-up, then
measures for the duration. It says on stdout when its measured phase starts and
ends, and the CPU snapshots are taken on those lines, so they bracket exactly what
was measured. `--log-file` writes a line per request of the measured phase (start
in microseconds since the epoch, HTTP status, duration in microseconds): the
latency percentiles come from it, as h2load itself prints only min/max/mean/sd.

h2load cannot see a gRPC status (a failed call is still HTTP 200, its status in the
trailers): the gRPC subject's answer is checked once before the rounds instead.
Nor does it count a connection that was refused: a window in which no call
completed counts as failed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpu, placement
from bench.aio import to_completion
from bench.load import LoadFailed, Window

__all__ = [
    "MAIN_OVER",
    "MAIN_STARTED",
    "H2load",
    "H2loadSummary",
    "LogFigures",
    "grpc_frame",
    "h2load_binary",
    "h2load_command",
    "parse_log",
    "parse_summary",
    "seconds_arg",
]

MAIN_STARTED = "Main benchmark duration is started"
MAIN_OVER = "Main benchmark duration is over"
_START_TIMEOUT = 15.0  # seconds h2load may take to connect, besides the warm-up
_EXIT_TIMEOUT = 15.0  # seconds past the window for it to exit

_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)
_FINISHED = re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s", re.MULTILINE)


def h2load_binary() -> str | None:
    """The h2load on PATH, or None."""
    return shutil.which("h2load")


def seconds_arg(seconds: float) -> str:
    """A duration as h2load takes it: whole milliseconds ("1500ms"); it refuses "1.5"."""
    return f"{max(1, round(seconds * 1000))}ms"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC request body: the uncompressed flag, the 4-byte big-endian length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def h2load_command(
    binary: str,
    url: str,
    *,
    connections: int,
    streams: int,
    warmup: float,
    duration: float,
    log_file: Path,
    h1: bool,
    body_file: Path | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """h2load's argv for one window on `url`: `connections` connections with `streams`
    requests in flight each (HTTP/1.1 when `h1`: one), POST of `body_file` if given."""
    if h1 and streams != 1:
        raise ValueError("HTTP/1.1 has one request in flight per connection")
    if warmup <= 0:
        raise ValueError("h2load needs a warm-up to say when it starts measuring")
    argv = [
        binary,
        "--threads=1",
        f"--clients={connections}",
        f"--max-concurrent-streams={streams}",
        f"--duration={seconds_arg(duration)}",
        f"--warm-up-time={seconds_arg(warmup)}",
        f"--log-file={log_file}",
    ]
    if h1:
        argv.append("--h1")
    if body_file is not None:
        argv.append(f"--data={body_file}")
    for name, value in headers:
        argv.append(f"--header={name}: {value}")
    argv.append(url)
    return argv


@dataclass(frozen=True)
class H2loadSummary:
    """h2load's closing lines (the measured phase's requests only)."""

    total: int
    started: int
    done: int
    succeeded: int  # answered with a 2xx
    failed: int  # not answered with a 2xx, errored ones included
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    requests_per_s: float


def parse_summary(text: str) -> H2loadSummary:
    """The summary in h2load's stdout; raises ValueError if it has none (h2load did
    not get as far as measuring)."""
    requests = _REQUESTS.search(text)
    status = _STATUS.search(text)
    finished = _FINISHED.search(text)
    if requests is None or status is None or finished is None:
        raise ValueError("no summary in h2load's output")
    total, started, done, succeeded, failed, errored, timeout = map(int, requests.groups())
    s2, s3, s4, s5 = map(int, status.groups())
    return H2loadSummary(
        total, started, done, succeeded, failed, errored, timeout, s2, s3, s4, s5,
        float(finished.group(1)),
    )  # fmt: skip


@dataclass(frozen=True)
class LogFigures:
    """What a --log-file says: the latency of each 2xx answer, and the other statuses."""

    latencies: array[float]  # seconds, in the file's order
    not_2xx: int
    statuses: Mapping[int, int]  # the status codes other than 2xx, with their counts


def parse_log(text: str) -> LogFigures:
    """Lines of "<start us>\\t<status>\\t<duration us>"; a line cut short at the end (h2load
    stopped mid-write) is skipped. Status -1 is h2load's for a request that got no
    response."""
    latencies: array[float] = array("d")
    others: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 3 or not fields[2].isdigit():
            continue
        try:
            status = int(fields[1])
        except ValueError:
            continue
        if 200 <= status < 300:
            latencies.append(int(fields[2]) / 1e6)
        else:
            others[status] = others.get(status, 0) + 1
    return LogFigures(latencies, sum(others.values()), others)


@dataclass(frozen=True)
class H2load:
    """The load of one subject: what h2load is asked to do, apart from the timing."""

    url: str
    connections: int
    streams: int  # in flight per connection
    h1: bool
    body_file: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def in_flight(self) -> int:
        return self.connections * self.streams

    async def measure(
        self,
        binary: str,
        workdir: Path,
        *,
        warmup: float,
        duration: float,
        cpus: frozenset[int] | None,
        server_pid: int,
        background_pids: Sequence[int],
        tracked: Mapping[str, int],
        tick: Callable[[str], None],
    ) -> Window:
        """One window: h2load (on `cpus`) loads for `warmup`, then `duration` measured;
        the CPU of `server_pid` (its main thread too), of h2load, of this process, of
        `background_pids` together and of each `tracked` process over the measured
        phase. Raises LoadFailed if h2load fails or measures nothing."""
        log_file = workdir / "h2load-requests.log"
        log_file.unlink(missing_ok=True)
        argv = h2load_command(
            binary,
            self.url,
            connections=self.connections,
            streams=self.streams,
            warmup=warmup,
            duration=duration,
            log_file=log_file,
            h1=self.h1,
            body_file=self.body_file,
            headers=self.headers,
        )
        process = _spawn(argv, cpus)
        watched = [server_pid, process.pid, os.getpid(), *background_pids, *tracked.values()]
        finished = False
        reading = asyncio.ensure_future(
            asyncio.to_thread(_phases, process, watched, server_pid, tracked)
        )
        try:
            started = time.monotonic()
            deadline = started + warmup + duration + _START_TIMEOUT + _EXIT_TIMEOUT
            while not reading.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoadFailed("h2load did not finish in time")
                tick(f"{time.monotonic() - started:4.1f}/{warmup + duration:.1f} s")
                await asyncio.wait((reading,), timeout=min(0.5, left))
            phases = reading.result()
            finished = True
        finally:
            tick("")
            await to_completion(asyncio.to_thread(_end, process, finished))
            # h2load is gone, so the reader has read its last line, or soon will.
            await to_completion(asyncio.wait((reading,)))
            if not reading.cancelled():
                reading.exception()  # retrieved: raised above already, or of no interest
            if process.stdout is not None:
                process.stdout.close()
            figures = parse_log(log_file.read_text(errors="replace")) if log_file.exists() else None
            log_file.unlink(missing_ok=True)
        if phases.before is None or phases.after is None or figures is None:
            raise LoadFailed("h2load did not measure:\n" + phases.output[-2000:])
        if process.returncode != 0:
            raise LoadFailed(f"h2load exited with {process.returncode}:\n{phases.output[-2000:]}")
        try:
            summary = parse_summary(phases.output)
        except ValueError:
            raise LoadFailed(f"h2load printed no summary:\n{phases.output[-2000:]}") from None
        return _window(
            duration, summary, figures, phases, server_pid, process.pid, background_pids, tracked
        )


def _spawn(argv: Sequence[str], cpus: frozenset[int] | None) -> subprocess.Popen[bytes]:
    """Start h2load on `cpus`. Not with asyncio's subprocesses: their child watcher reaps
    h2load the moment it exits, and it may exit before the driver reads its last line
    (they share a core); unreaped, its CPU time stays readable in /proc until `_end`."""
    with placement.launching_on(cpus):
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class _Phases:
    """What a run of h2load printed, and the snapshots taken as its measured phase
    began and ended (None: it never got there)."""

    output: str = ""
    before: cpu.CpuSnapshot | None = None
    after: cpu.CpuSnapshot | None = None
    switches: dict[str, int] = field(default_factory=dict)


def _phases(
    process: subprocess.Popen[bytes],
    watched: Sequence[int],
    server_pid: int,
    tracked: Mapping[str, int],
) -> _Phases:
    """Read h2load's output to its end (in a thread), snapshotting the CPU on the lines
    that start and end its measured phase."""
    assert process.stdout is not None
    phases = _Phases()
    lines = []
    switches: dict[str, int] = {}
    for raw in process.stdout:
        line = raw.decode(errors="replace")
        lines.append(line)
        if line.startswith(MAIN_STARTED) and phases.before is None:
            phases.before = cpu.snapshot(watched, [server_pid])
            switches = {label: cpu.context_switches(pid) for label, pid in tracked.items()}
        elif line.startswith(MAIN_OVER) and phases.before is not None and phases.after is None:
            phases.after = cpu.snapshot(watched, [server_pid])
            phases.switches = {
                label: cpu.context_switches(pid) - switches[label] for label, pid in tracked.items()
            }
    phases.output = "".join(lines)
    return phases


def _end(process: subprocess.Popen[bytes], finished: bool) -> None:
    """Reap h2load: once it exits if it `finished` its output, else (an error, Ctrl-C)
    after SIGTERM at once; SIGKILL if it lingers."""
    if finished:
        try:
            process.wait(timeout=_EXIT_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    process.terminate()
    try:
        process.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _status_text(status: int) -> str:
    """What a status in h2load's log means (-1 and 0 are its own)."""
    if status == -1:
        return "no answer (stream reset or connection closed)"
    if status == 0:
        return "an answer h2load read no status in"
    return f"HTTP {status}"


def _window(
    duration: float,
    summary: H2loadSummary,
    figures: LogFigures,
    phases: _Phases,
    server_pid: int,
    load_pid: int,
    background_pids: Sequence[int],
    tracked: Mapping[str, int],
) -> Window:
    before, after = phases.before, phases.after
    assert before is not None
    assert after is not None
    errors = figures.not_2xx + summary.errored + summary.timeout
    samples = [f"{_status_text(status)}: {n}" for status, n in sorted(figures.statuses.items())]
    if summary.errored or summary.timeout:
        samples.append(f"h2load: {summary.errored} errored, {summary.timeout} timed out")
    if not figures.latencies:
        errors += 1
        samples.append("no call completed (a refused connection shows only as this)")
    ran, waited = before.main_thread_seconds(after, server_pid)
    return Window(
        duration=duration,
        elapsed=after.at - before.at,
        calls=len(figures.latencies),
        errors=errors,
        error_samples=samples[:5],
        latencies=figures.latencies,
        server_cpu=before.process_seconds(after, server_pid),
        server_loop_ran=ran,
        server_loop_waited=waited,
        client_cpu=[before.process_seconds(after, load_pid)],
        driver_cpu=before.process_seconds(after, os.getpid()),
        background_cpu=sum(before.process_seconds(after, pid) for pid in background_pids),
        machine_cpu=after.machine - before.machine,
        core_cpu={core: busy - before.cores.get(core, 0.0) for core, busy in after.cores.items()},
        tracked_cpu={label: before.process_seconds(after, pid) for label, pid in tracked.items()},
        tracked_switches=phases.switches,
    )
