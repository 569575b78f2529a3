"""`python -m bench`: unary calls/s and latency of a bare grpc.aio echo server (the
baseline), of the same server with mTLS, of two ShopMesh product instances serving
GetProduct with their whole runtime (one as the repo's mesh.yaml configures it, with
head sampling of traces at its ratio, and one tracing every call), and of the product
servicer alone on a bare grpc.aio server with mTLS; then ShopMesh's ratios against the
baselines. The last subject splits the gap: what GetProduct itself costs against the
echo, and what the mesh adds to it.

The benchmark machine's speed drifts by some 15% over tens of seconds, so subjects
measured one after another are measured on different machines. Instead, every server
runs for the whole benchmark and the subjects are interleaved: R rounds, and in each
round a window of W seconds (after a warm-up) on every subject, in the same order.
A subject's figures pool its windows; a ratio of calls/s is taken within each round
and the median over rounds reported, with its min-max.

Every window gets the same load, from the same load processes (bench.load), with the
same worker count, calls in flight, warm-up and length. On a machine with two cores
or more, the servers are pinned to one core and the driver, load processes and etcd
to another (bench.placement), so the server under test has a core to itself and no
window depends on where the scheduler put whom. CPU use of the server, the load
processes, the idle servers, each core and the rest of the machine is read from /proc
over each measured window, so a reader can check that the server was the limit and
nothing else disturbed it.

Exit code: 0 when every window was measured without errors (whether or not the target
is met: this is a measurement, not a test); 1 if something failed to start or calls
failed; 130 on Ctrl-C (or SIGTERM, SIGHUP). Everything started is stopped on every
path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

from bench import placement as pinning
from bench.aio import to_completion
from bench.echo_server import METHOD as ECHO_METHOD
from bench.load import LoadFailed, LoadPool, Target
from bench.placement import Placement
from bench.report import Progress, print_report
from bench.results import Ratio, SubjectResult, ratio
from bench.summary import Checks, InstanceCheck, Summary, TargetJson, ThreadPlacement

__all__ = ["Settings", "main", "summarize", "target_summary"]

_T = TypeVar("_T")

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.85
"""Floor of what the mesh itself adds: ShopMesh GetProduct over the same servicer on bare
grpc.aio with the mesh's mTLS (rows 3/5), median over the rounds. The ratio to the
plaintext echo (rows 3/1) is reported with no target."""

# Load shape: 2 processes x 32 calls in flight (64 in all, as in design.md's h2load
# figures). Pinned, the load processes share one core, the server has the other.
# Measured on this 2-core machine (2 rounds x 3 s):
#   workers x in flight   echo calls/s   client CPU per call   load core busy (echo)
#   1 x 64                 4,114          201 us                83%
#   2 x 32                 4,271          205 us                88%
#   1 x 32                 3,998          210 us                85%
# Throughput does not move with the load shape beyond noise, and in every window the
# server's loop thread is busy or runnable ~96% of the time ("loop idle %" ~4): the
# server is the limit. The load core is busiest in the echo rows (80-95%), because a
# Python gRPC client costs ~200 us per call against ~240 us for the echo server, and
# there is no cheaper client to use: grpc's sync API with futures costs 180-195 us per
# call, and h2load cannot present a client certificate. Should the load core ever
# saturate, it would understate the baseline and so flatter ShopMesh's ratio: the
# report warns when the load core passes 95% or the server's loop idles over 10%.
DEFAULT_WORKERS = 2
DEFAULT_CONCURRENCY = 32
# 5 subjects x 5 rounds x (1 + 4) s, plus start-up and shut-down: about 2 m 15 s.
DEFAULT_ROUNDS = 5
DEFAULT_WINDOW = 4.0
DEFAULT_WARMUP = 1.0
QUICK_ROUNDS = 2
QUICK_WINDOW = 1.5
QUICK_WARMUP = 0.5

PLAIN = "bare grpc.aio echo"
MTLS = "bare grpc.aio echo + mTLS"
SHOPMESH = "ShopMesh GetProduct"
TRACED = "ShopMesh GetProduct, every call traced"
BARE_PRODUCT = "GetProduct on bare grpc.aio + mTLS"
SUBJECTS = 5
TRACED_INSTANCE_ID = "product-2"


@dataclass(frozen=True)
class Settings:
    rounds: int
    window: float
    warmup: float
    workers: int
    concurrency: int
    pin: bool

    @property
    def estimate(self) -> float:
        """Seconds a run takes, roughly: its windows plus start-up and shut-down."""
        return SUBJECTS * self.rounds * (self.warmup + self.window + 0.1) + 8


@dataclass(frozen=True)
class Server:
    """A subject: a server process and what the load calls on it."""

    name: str
    detail: str
    label: str  # short name in placement lines
    pid: int
    target: Target


@asynccontextmanager
async def _server_process(
    module: str, args: Sequence[str], log_path: Path, cpus: frozenset[int] | None
) -> AsyncIterator[tuple[int, int]]:
    """Run `python -m <module> <args>` (a server that prints its port once it serves)
    in its own process, on `cpus`; yields (pid, port)."""
    from mesh.supervisor import stop_process

    with log_path.open("ab") as log, pinning.launching_on(cpus):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # a terminal's Ctrl-C reaches the driver only
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.strip().isdigit():
            await process.wait()
            raise LoadFailed(
                f"{module} did not start (exit code {process.returncode}):\n" + _tail(log_path)
            )
        yield process.pid, int(line)
    finally:
        await to_completion(stop_process(process, 5.0))


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _placement_check(
    where: Placement, servers: Sequence[Server], load_side: dict[str, int]
) -> dict[str, ThreadPlacement]:
    """Every thread of every process, and the cores it may run on, against the plan."""
    if where.server_cpus is None or where.load_cpus is None:
        return {}
    checked: dict[str, ThreadPlacement] = {}
    for cpus, processes in (
        (where.server_cpus, {s.label: s.pid for s in servers}),
        (where.load_cpus, load_side),
    ):
        for label, pid in processes.items():
            threads, stray = pinning.stray_threads(pid, cpus)
            checked[label] = {
                "pid": pid,
                "cpus": pinning.cpu_list(cpus),
                "threads": threads,
                "threads_elsewhere": stray,
            }
    return checked


async def _run(settings: Settings, where: Placement, progress: Progress) -> Summary:
    from shop.product.v1 import product_pb2

    from bench import shopmesh

    # Same bytes as the GetProduct request, so both baselines carry a like-sized payload.
    payload = product_pb2.GetProductRequest(product_id=shopmesh.PRODUCT_ID).SerializeToString()

    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-") as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        async with (
            shopmesh.mesh_environment(root, progress.report) as env,
            AsyncExitStack() as stack,
        ):
            etcd_pids = [env.etcd.pid] if env.etcd.pid else []
            cores = f" on core {pinning.cpu_list(where.server_cpus)}" if where.server_cpus else ""
            progress.report(f"starting the servers{cores}")
            servers: list[Server] = []

            pid, port = await stack.enter_async_context(
                _server_process("bench.echo_server", [], logs / "echo.log", where.server_cpus)
            )
            servers.append(
                Server(
                    PLAIN,
                    "plaintext",
                    "echo",
                    pid,
                    Target(f"127.0.0.1:{port}", ECHO_METHOD, payload),
                )
            )
            progress.report(
                f"  1 {PLAIN}: 127.0.0.1:{port} (pid {pid}), plaintext, uvloop, "
                "generic handler, raw bytes"
            )
            mtls_args = ["--certs", str(env.certs_dir), "--identity", "product"]
            pid, port = await stack.enter_async_context(
                _server_process(
                    "bench.echo_server", mtls_args, logs / "echo-mtls.log", where.server_cpus
                )
            )
            servers.append(
                Server(
                    MTLS,
                    "mTLS",
                    "echo+mTLS",
                    pid,
                    Target(f"127.0.0.1:{port}", ECHO_METHOD, payload, env.certs_dir),
                )
            )
            progress.report(f"  2 {MTLS}: 127.0.0.1:{port} (pid {pid}), the mesh's credentials")

            traced_config = env.variant("traced", trace_sample_ratio=1.0)
            instances = []
            for name, config, instance_id in (
                (SHOPMESH, env.config, shopmesh.INSTANCE_ID),
                (TRACED, traced_config, TRACED_INSTANCE_ID),
            ):
                started = time.monotonic()
                instance = await stack.enter_async_context(
                    shopmesh.product_instance(
                        env,
                        config,
                        instance_id,
                        lambda: pinning.launching_on(where.server_cpus),
                    )
                )
                request = await shopmesh.create_product(env, instance.address)
                denied = await shopmesh.permission_denied_for(env, instance.address, "product")
                instances.append((instance, denied))
                servers.append(
                    Server(
                        name,
                        f"mTLS+stack, trace ratio {instance.trace_sample_ratio:g}",
                        instance_id,
                        instance.pid,
                        Target(instance.address, shopmesh.GET_PRODUCT, request, env.certs_dir),
                    )
                )
                progress.report(
                    f"  {len(servers)} {name}: {instance_id} {instance.address} "
                    f"(pid {instance.pid}, trace_sample_ratio {instance.trace_sample_ratio:g}, "
                    f"ready in {time.monotonic() - started:.1f}s); created "
                    f"{shopmesh.PRODUCT_ID} as admin; GetProduct as product: "
                    + ("PERMISSION_DENIED (authz active)" if denied else "NOT denied")
                )
            pid, port = await stack.enter_async_context(
                _server_process(
                    "bench.product_server", mtls_args, logs / "product.log", where.server_cpus
                )
            )
            address = f"127.0.0.1:{port}"
            request = await shopmesh.create_product(env, address)
            servers.append(
                Server(
                    BARE_PRODUCT,
                    "mTLS, no mesh",
                    "product",
                    pid,
                    Target(address, shopmesh.GET_PRODUCT, request, env.certs_dir),
                )
            )
            progress.report(
                f"  {len(servers)} {BARE_PRODUCT}: {address} (pid {pid}), the product "
                "servicer and store alone on grpc.aio, the mesh's credentials"
            )
            if where.load_cpus is not None:
                # Threads the driver started while launching (asyncio's child watchers)
                # inherited the server core: back to the load core with them.
                pinning.pin_threads(os.getpid(), where.load_cpus)

            subjects = [SubjectResult(i + 1, s.name, s.detail) for i, s in enumerate(servers)]
            handled_before = [shopmesh.handled_calls(instance) for instance, _ in instances]
            started = time.monotonic()
            async with LoadPool(
                [s.target for s in servers],
                workers=settings.workers,
                concurrency=settings.concurrency,
                cpus=where.load_cpus,
            ) as pool:
                progress.report(
                    f"{settings.workers} load processes x {settings.concurrency} in flight "
                    f"(pids {', '.join(map(str, pool.pids))}) connected to all "
                    f"{len(servers)} servers ({time.monotonic() - started:.1f}s)"
                )
                for number in range(1, settings.rounds + 1):
                    for index, server in enumerate(servers):
                        background = [s.pid for s in servers if s is not server] + etcd_pids
                        window = await pool.measure(
                            index,
                            warmup=settings.warmup,
                            duration=settings.window,
                            server_pid=server.pid,
                            background_pids=background,
                            tick=progress.ticker(
                                f"round {number}/{settings.rounds}, {index + 1} {server.name}:"
                            ),
                        )
                        subjects[index].windows.append(window)
                        progress.window(number, settings.rounds, subjects[index], window)
                    progress.round_ratios(number, subjects)
                load_side = {
                    **{f"load-{i}": pid for i, pid in enumerate(pool.pids)},
                    "driver": os.getpid(),
                    **({"etcd": etcd_pids[0]} if etcd_pids else {}),
                }
                placed = _placement_check(where, servers, load_side)
            handled_after = [shopmesh.handled_calls(instance) for instance, _ in instances]
            await stack.aclose()  # stops the instances, which flushes their spans

            evidence: list[InstanceCheck] = []
            for (instance, denied), before, after, server in zip(
                instances, handled_before, handled_after, servers[2:4], strict=True
            ):
                evidence.append(
                    {
                        "subject": server.name,
                        "instance_id": instance.instance_id,
                        "trace_sample_ratio": instance.trace_sample_ratio,
                        "authz_denies_product_identity": denied,
                        "metrics_handled_ok_during_load": after - before,
                        "metrics_handled_ok_total": after,
                        "trace_spans_get_product": shopmesh.traced_calls(instance.trace_file),
                        "trace_file": instance.trace_file.name,
                    }
                )
            checks: Checks = {"instances": evidence, "placement": placed}
    return summarize(subjects, settings, where, checks)


def summarize(
    subjects: Sequence[SubjectResult], settings: Settings, where: Placement, checks: Checks
) -> Summary:
    """The run's summary (what `--json` writes): the subjects in the driver's order."""
    plain, mtls, mesh, traced, bare = subjects
    ratios = {
        "shopmesh_vs_plaintext_echo": ratio(mesh, plain),
        "shopmesh_traced_vs_plaintext_echo": ratio(traced, plain),
        "shopmesh_vs_mtls_echo": ratio(mesh, mtls),
        "shopmesh_vs_bare_product": ratio(mesh, bare),
        "bare_product_vs_mtls_echo": ratio(bare, mtls),
        "mtls_echo_vs_plaintext_echo": ratio(mtls, plain),
    }
    return {
        "benchmark": "unary calls, bench/",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": version("grpcio"),
            "uvloop": version("uvloop"),
        },
        "placement": where.as_json(),
        "settings": {
            "rounds": settings.rounds,
            "window_s": settings.window,
            "warmup_s": settings.warmup,
            "workers": settings.workers,
            "concurrency_per_worker": settings.concurrency,
            "in_flight": settings.workers * settings.concurrency,
            "order_each_round": [s.name for s in subjects],
        },
        "subjects": [s.as_json(where.cores) for s in subjects],
        "ratios": {key: r.as_json() for key, r in ratios.items()},
        "target": target_summary(ratios["shopmesh_vs_bare_product"], settings.rounds),
        "checks": checks,
    }


def target_summary(floor: Ratio, rounds: int) -> TargetJson:
    """The target, rows 3/5: met when the median is at least TARGET (NaN never is)."""
    return {
        "ratio": f"{SHOPMESH} calls/s / {BARE_PRODUCT} calls/s (rows 3/5)",
        "statistic": f"median over {rounds} rounds of the per-round ratio",
        "minimum": TARGET,
        "value": floor.median,
        "min": floor.low,
        "max": floor.high,
        "met": floor.median >= TARGET,
    }


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Unary calls/s and latency: bare grpc.aio echo vs ShopMesh GetProduct, "
        "interleaved in rounds.",
    )
    parser.add_argument(
        "--rounds", type=int, help=f"rounds over all subjects (default {DEFAULT_ROUNDS})"
    )
    parser.add_argument(
        "--window",
        "--duration",
        dest="window",
        type=float,
        help=f"measured seconds per subject per round (default {DEFAULT_WINDOW:g})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help=f"warm-up seconds before each window (default {DEFAULT_WARMUP:g})",
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="load processes")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="calls in flight per process"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave process placement to the scheduler (default: servers on core 1, "
        "driver, load and etcd on core 0)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {QUICK_ROUNDS} rounds of {QUICK_WARMUP:g} s warm-up + "
        f"{QUICK_WINDOW:g} s measured",
    )
    args = parser.parse_args(argv)

    def pick(given: _T | None, quick: _T, default: _T) -> _T:
        return given if given is not None else quick if args.quick else default

    settings = Settings(
        rounds=pick(args.rounds, QUICK_ROUNDS, DEFAULT_ROUNDS),
        window=pick(args.window, QUICK_WINDOW, DEFAULT_WINDOW),
        warmup=pick(args.warmup, QUICK_WARMUP, DEFAULT_WARMUP),
        workers=args.workers,
        concurrency=args.concurrency,
        pin=args.pin,
    )
    if (
        settings.rounds < 1
        or settings.workers < 1
        or settings.concurrency < 1
        or settings.window <= 0
        or settings.warmup < 0
    ):
        parser.error(
            "--rounds, --workers and --concurrency must be >= 1, --window > 0, --warmup >= 0"
        )
    return args, settings


def _as_ctrl_c(signum: int, frame: object) -> None:
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args, settings = _parse(sys.argv[1:] if argv is None else argv)
    # A closed terminal or a `kill` cleans up as Ctrl-C does (the servers run in their
    # own sessions: nobody else would stop them).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _as_ctrl_c)
    where = pinning.plan(settings.pin)
    if where.load_cpus is not None:
        # Before any thread exists: every thread and child of the driver inherits it.
        os.sched_setaffinity(0, where.load_cpus)
    progress = Progress()
    progress.report(
        f"ShopMesh benchmark: {SUBJECTS} subjects x {settings.rounds} rounds, each window "
        f"{settings.warmup:g} s warm-up + {settings.window:g} s measured "
        f"(about {int(settings.estimate // 60)} min {int(settings.estimate % 60):02d} s in all); "
        f"{settings.workers} load processes x {settings.concurrency} in flight"
    )
    progress.report(f"placement: {progress.placement_text(where)}")
    try:
        summary = asyncio.run(_run(settings, where, progress))
    except KeyboardInterrupt:
        progress.report("interrupted: everything started has been stopped")
        return 130
    except Exception as error:  # a failure to start, to set up or to load: exit 1
        from mesh.errors import MeshError

        if not isinstance(error, LoadFailed | MeshError | OSError | TimeoutError):
            traceback.print_exc()
        progress.report(f"FAILED: {type(error).__name__}: {error}")
        return 1
    print_report(summary, where)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nResults written to {args.json}")
    errors = sum(row["errors"] for row in summary["subjects"])
    if errors:
        print(f"\n{errors} calls failed: see the error samples above", file=sys.stderr)
        return 1
    return 0
