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

Then the sidecar data plane (bench.sidecar, bench.sidecar_run; `--no-sidecar` skips
it): each round ends with six more windows, GetProduct proxyless (row 3's instance)
and through two sidecars (a caller's Envoy, product-3's Envoy, product-3's app on its
Unix socket), back to back at the run's load, at low load (16 in flight) and at one
call in flight per load process, with both Envoys' CPU read from /proc. After the
load, with five more Envoys up, 20 registry changes are timed from the etcd call to
every sidecar's admin /clusters. The report prints these after the target, and
`--json` holds them under "sidecar" (null when skipped).

Then the edge rows (bench.edge, bench.h2load; `--no-edge` skips them): after the
load above, with its servers stopped, the REST edge (`python -m gateway`) against
Envoy's grpc_json_transcoder and direct gRPC over one plaintext product backend,
and the edge's Site on other HTTP servers, interleaved in rounds of their own with
the same rounds, warm-up, window and calls in flight, loaded by h2load; and the JSON
candidates (bench.edge_json). The report prints them last, and `--json` holds them
under "edge" (null when skipped).

Then the shop part (bench.shop; `--no-shop` skips it): a mesh of its own with NATS and
real product, inventory, order, payment and shipping instances; GetProduct (the bare
unary call) and PlaceOrder (its saga and its events) interleaved in rounds of their
own with the same rounds, warm-up and window, from the same kind of load processes at
bench.shop.SHOP_CONCURRENCY in flight each; then the outbox relay's latency from
commit to a consumer, under that load, at idle and for the relay alone. The report
prints it last, and `--json` holds it under "shop" (null when skipped).

Exit code: 0 when every window was measured without errors (whether or not the target
is met: this is a measurement, not a test); 1 if something failed to start or calls
failed; 130 on Ctrl-C (or SIGTERM, SIGHUP). Everything started is stopped on every
path.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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
from typing import TYPE_CHECKING, TypeVar

from bench import placement as pinning
from bench.aio import to_completion
from bench.echo_server import METHOD as ECHO_METHOD
from bench.edge import EDGE_SUBJECTS
from bench.load import LoadFailed, LoadPool, Target, Window
from bench.placement import Placement
from bench.report import Progress, print_report
from bench.results import Ratio, SubjectResult, ratio
from bench.shop import IDLE_ORDERS, QUICK_IDLE_ORDERS, SHOP_CONCURRENCY, SHOP_SETUP, shop_seconds
from bench.sidecar_report import print_sidecar_report, sidecar_round_line, sidecar_window_line
from bench.sidecar_results import CHANGES, EXTRA_SIDECARS, sidecar_summary
from bench.summary import (
    Checks,
    EdgeJson,
    InstanceCheck,
    ShopJson,
    SidecarJson,
    Summary,
    TargetJson,
    ThreadPlacement,
)

if TYPE_CHECKING:  # imported where used: they load the mesh, the protos and grpc
    from bench.shopmesh import MeshEnvironment
    from bench.sidecar import SidecarPath
    from bench.sidecar_run import SidecarRounds

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
SIDECAR_WINDOWS = 6  # per round: proxyless and two sidecars, at 3 loads (Settings.sidecar_timing)
SIDECAR_SETUP = 6.0  # seconds: control plane and Envoys up, the registry changes, stopping
EDGE_SETUP = 9.0  # seconds: the backend, Envoy and the edges up, the JSON candidates, stopping
EDGE_WINDOW_COST = 0.1  # seconds per edge window besides its own: h2load starts, connects, exits


@dataclass(frozen=True)
class Settings:
    rounds: int
    window: float
    warmup: float
    workers: int
    concurrency: int
    pin: bool
    sidecar: bool = True  # also the sidecar rows and the registry-to-sidecars figures
    # Dev options: the sidecar rows alone (no main windows), and bench.sidecar_variants.
    sidecar_only: bool = False
    sidecar_variants: tuple[str, ...] = ()
    edge: bool = True  # also the edge rows (bench.edge)
    edge_only: bool = False  # dev option: the edge rows alone
    shop: bool = True  # also the shop part (bench.shop)
    shop_only: bool = False  # dev option: the shop part alone
    shop_concurrency: int = SHOP_CONCURRENCY  # calls in flight per load process there
    shop_orders: int = IDLE_ORDERS  # orders placed one at a time at idle

    @property
    def in_flight(self) -> int:
        return self.workers * self.concurrency

    @property
    def sidecar_timing(self) -> tuple[tuple[float, float], ...]:
        """(warm-up, measured) seconds of the sidecar windows at each load level: half
        a main window at the run's load, a quarter at low and light load (their p50
        settles within a second; their connections are warm already)."""
        half = (self.warmup / 2, self.window / 2)
        quarter = (self.warmup / 4, self.window / 4)
        return (half, quarter, quarter)

    @property
    def estimate(self) -> float:
        """Seconds a run takes, roughly: its windows plus start-up and shut-down."""
        shop = 0.0
        if self.shop or self.shop_only:
            shop = SHOP_SETUP + shop_seconds(
                self.rounds, self.warmup, self.window, self.shop_orders
            )
        if self.shop_only:
            return shop
        edge = 0.0
        if self.edge or self.edge_only:
            per_window = self.warmup + self.window + EDGE_WINDOW_COST
            edge = EDGE_SETUP + EDGE_SUBJECTS * self.rounds * per_window
        if self.edge_only:
            return edge
        main = 8.0 + edge + shop
        if not self.sidecar_only:
            main += SUBJECTS * self.rounds * (self.warmup + self.window + 0.1)
        if not self.sidecar:
            return main
        pairs = sum(warmup + window + 0.1 for warmup, window in self.sidecar_timing)
        return main + 2 * pairs * self.rounds + SIDECAR_SETUP


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
    where: Placement, server_side: dict[str, int], load_side: dict[str, int]
) -> dict[str, ThreadPlacement]:
    """Every thread of every process, and the cores it may run on, against the plan."""
    if where.server_cpus is None or where.load_cpus is None:
        return {}
    checked: dict[str, ThreadPlacement] = {}
    for cpus, processes in ((where.server_cpus, server_side), (where.load_cpus, load_side)):
        for label, pid in processes.items():
            threads, stray = pinning.stray_threads(pid, cpus)
            checked[label] = {
                "pid": pid,
                "cpus": pinning.cpu_list(cpus),
                "threads": threads,
                "threads_elsewhere": stray,
            }
    return checked


@dataclass(frozen=True)
class _SidecarOnly:
    """What a `--sidecar-only` run yields: the sidecar part alone."""

    sidecar: SidecarJson


@dataclass(frozen=True)
class _EdgeOnly:
    """What an `--edge-only` run yields: the edge part alone (None: skipped)."""

    edge: EdgeJson | None


@dataclass(frozen=True)
class _ShopOnly:
    """What a `--shop-only` run yields: the shop part alone."""

    shop: ShopJson


async def _run_all(
    settings: Settings, where: Placement, progress: Progress
) -> Summary | _SidecarOnly | _EdgeOnly | _ShopOnly:
    """The main rows and the sidecar part (unless --edge-only or --shop-only), then the
    edge part (unless --no-edge or --sidecar-only), then the shop part (unless
    --no-shop or --sidecar-only), each with its own processes."""
    if settings.edge_only:
        return _EdgeOnly(await _run_edge(settings, where, progress))
    if settings.shop_only:
        return _ShopOnly(await _run_shop(settings, where, progress))
    result = await _run(settings, where, progress)
    if settings.edge and not isinstance(result, _SidecarOnly):
        result["edge"] = await _run_edge(settings, where, progress)
    if settings.shop and not isinstance(result, _SidecarOnly):
        result["shop"] = await _run_shop(settings, where, progress)
    return result


async def _run_shop(settings: Settings, where: Placement, progress: Progress) -> ShopJson:
    from bench.shop import run_shop

    return await run_shop(
        rounds=settings.rounds,
        warmup=settings.warmup,
        window=settings.window,
        workers=settings.workers,
        concurrency=settings.shop_concurrency,
        orders=settings.shop_orders,
        where=where,
        progress=progress,
    )


async def _run_edge(settings: Settings, where: Placement, progress: Progress) -> EdgeJson | None:
    from bench.edge import run_edge

    return await run_edge(
        rounds=settings.rounds,
        warmup=settings.warmup,
        window=settings.window,
        in_flight=settings.in_flight,
        where=where,
        progress=progress,
    )


async def _run(settings: Settings, where: Placement, progress: Progress) -> Summary | _SidecarOnly:
    from shop.product.v1 import product_pb2

    from bench import shopmesh, sidecar
    from bench.sidecar_run import SidecarRounds

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
            path = None
            targets = [s.target for s in servers]
            if settings.sidecar:
                path = await stack.enter_async_context(
                    sidecar.sidecar_path(
                        env, where.server_cpus, progress.report, settings.sidecar_variants
                    )
                )
                targets.append(
                    path.target(await shopmesh.create_product(env, path.product.address))
                )
            sidecar_pids = [] if path is None else _sidecar_pids(path)
            if where.load_cpus is not None:
                # Threads the driver started while launching (asyncio's child watchers)
                # inherited the server core: back to the load core with them.
                pinning.pin_threads(os.getpid(), where.load_cpus)

            subjects = [SubjectResult(i + 1, s.name, s.detail) for i, s in enumerate(servers)]
            rounds = None
            if path is not None:
                rounds = SidecarRounds(
                    path,
                    proxyless_target=2,  # row 3: product-1's mTLS port
                    proxyless_pid=servers[2].pid,
                    proxyless_instance=shopmesh.INSTANCE_ID,
                    sidecar_target=len(servers),
                    workers=settings.workers,
                    concurrency=settings.concurrency,
                    timing=settings.sidecar_timing,
                    first_row=len(servers) + 1,
                    other_pids=[s.pid for s in servers] + etcd_pids,
                )
            handled_before = [shopmesh.handled_calls(instance) for instance, _ in instances]
            sidecar_handled_before = 0 if path is None else shopmesh.handled_calls(path.product)
            started = time.monotonic()
            async with LoadPool(
                targets,
                workers=settings.workers,
                concurrency=settings.concurrency,
                cpus=where.load_cpus,
            ) as pool:
                progress.report(
                    f"{settings.workers} load processes x {settings.concurrency} in flight "
                    f"(pids {', '.join(map(str, pool.pids))}) connected to all "
                    f"{len(targets)} targets ({time.monotonic() - started:.1f}s)"
                )
                for number in range(1, settings.rounds + 1):
                    for index, server in enumerate([] if settings.sidecar_only else servers):
                        background = [
                            *(s.pid for s in servers if s is not server),
                            *etcd_pids,
                            *sidecar_pids,
                        ]
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
                    if not settings.sidecar_only:
                        progress.round_ratios(number, subjects)
                    if rounds is not None:
                        await rounds.measure_round(
                            pool,
                            number,
                            settings.rounds,
                            ticker=progress.ticker,
                            shown=functools.partial(_show_sidecar_window, progress),
                        )
                        progress.report(sidecar_round_line(number, rounds.run))
                server_side = {s.label: s.pid for s in servers}
                load_side = {
                    **{f"load-{i}": pid for i, pid in enumerate(pool.pids)},
                    "driver": os.getpid(),
                    **({"etcd": etcd_pids[0]} if etcd_pids else {}),
                }
                if path is not None:
                    server_side |= {path.product.instance_id: path.product.pid}
                    server_side |= {path.inbound.label: path.inbound.pid}
                    load_side |= {path.caller.label: path.caller.pid}
                    load_side |= {"controlplane": path.controlplane_pid}
                placed = _placement_check(where, server_side, load_side)
            handled_after = [shopmesh.handled_calls(instance) for instance, _ in instances]
            sidecar_json = None
            if path is not None and rounds is not None:
                app_handled = shopmesh.handled_calls(path.product) - sidecar_handled_before
                sidecar_json = await _finish_sidecar(
                    env, path, rounds, app_handled, settings, where, progress
                )
            await stack.aclose()  # stops the instances, which flushes their spans
            if settings.sidecar_only and sidecar_json is not None:
                return _SidecarOnly(sidecar_json)

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
    return summarize(subjects, settings, where, checks, sidecar_json)


async def _finish_sidecar(
    env: MeshEnvironment,
    path: SidecarPath,
    rounds: SidecarRounds,
    app_handled: int,
    settings: Settings,
    where: Placement,
    progress: Progress,
) -> SidecarJson:
    """After the load: the registry changes, then the sidecar part's figures."""
    from bench.sidecar_run import placement_text, registry_changes

    progress.report(f"registry changes: {EXTRA_SIDECARS} more Envoys, {CHANGES} changes")
    propagation = await registry_changes(env, path, where.server_cpus, progress.ticker)
    return sidecar_summary(
        rounds.run,
        rounds=settings.rounds,
        windows_s=[window for _, window in settings.sidecar_timing],
        warmups_s=[warmup for warmup, _ in settings.sidecar_timing],
        placement=placement_text(where, path),
        cores=where.cores,
        propagation=propagation,
        app_handled=app_handled,
    )


def _sidecar_pids(path: SidecarPath) -> list[int]:
    """The sidecar part's processes, idle while the main rows are measured."""
    return [path.controlplane_pid, path.product.pid, path.inbound.pid, path.caller.pid]


def _show_sidecar_window(
    progress: Progress, number: int, rounds: int, subject: SubjectResult, window: Window
) -> None:
    progress.report(sidecar_window_line(number, rounds, subject, window))
    for sample in window.error_samples:
        progress.report(f"  ! {sample}")


def summarize(
    subjects: Sequence[SubjectResult],
    settings: Settings,
    where: Placement,
    checks: Checks,
    sidecar: SidecarJson | None = None,
) -> Summary:
    """The run's summary (what `--json` writes): the subjects in the driver's order,
    then the sidecar part (None if not run)."""
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
        "sidecar": sidecar,
        "edge": None,  # the edge part runs after the rest: the driver sets it then
        "shop": None,  # the shop part runs after the edge part: likewise
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
    parser.add_argument(
        "--no-sidecar",
        dest="sidecar",
        action="store_false",
        help="skip the sidecar data plane's rows and the registry-to-sidecars figures",
    )
    parser.add_argument(
        "--no-edge",
        dest="edge",
        action="store_false",
        help="skip the edge rows (the REST edge vs Envoy's grpc_json_transcoder and direct "
        "gRPC, the HTTP server and JSON candidates)",
    )
    parser.add_argument(
        "--no-shop",
        dest="shop",
        action="store_false",
        help="skip the shop part (PlaceOrder end to end against GetProduct, and the outbox "
        "relay's latency from commit to consumer)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    # Dev options for work on the shop part, left out of --help: it alone, and its
    # calls in flight per load process.
    parser.add_argument("--shop-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--shop-concurrency", type=int, default=SHOP_CONCURRENCY, help=argparse.SUPPRESS
    )
    # Dev option for work on the edge rows, left out of --help: them alone.
    parser.add_argument("--edge-only", action="store_true", help=argparse.SUPPRESS)
    # Dev options for experiments on the sidecar path, left out of --help.
    parser.add_argument("--sidecar-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sidecar-variant", default="", help=argparse.SUPPRESS)
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
        sidecar=(args.sidecar or args.sidecar_only) and not args.edge_only and not args.shop_only,
        sidecar_only=args.sidecar_only,
        sidecar_variants=_variants(parser, args.sidecar_variant),
        edge=(args.edge and not args.sidecar_only and not args.shop_only) or args.edge_only,
        edge_only=args.edge_only,
        shop=(args.shop and not args.sidecar_only and not args.edge_only) or args.shop_only,
        shop_only=args.shop_only,
        shop_concurrency=args.shop_concurrency,
        shop_orders=QUICK_IDLE_ORDERS if args.quick else IDLE_ORDERS,
    )
    if sum((settings.edge_only, settings.sidecar_only, settings.shop_only)) > 1:
        parser.error("--edge-only, --sidecar-only and --shop-only exclude each other")
    if (
        settings.rounds < 1
        or settings.workers < 1
        or settings.concurrency < 1
        or settings.shop_concurrency < 1
        or settings.window <= 0
        or settings.warmup < 0
    ):
        parser.error(
            "--rounds, --workers and --concurrency must be >= 1, --window > 0, --warmup >= 0"
        )
    return args, settings


def _variants(parser: argparse.ArgumentParser, text: str) -> tuple[str, ...]:
    from bench.sidecar_variants import parse

    try:
        return parse(text)
    except ValueError as error:
        parser.error(str(error))


def _sidecar_only_output(
    sidecar: SidecarJson, settings: Settings, where: Placement, path: Path | None
) -> int:
    variants = ", ".join(settings.sidecar_variants) or "none (the mesh as it is)"
    print(f"\nSidecar rows only; variants: {variants}")
    print_sidecar_report(sidecar, where)
    if path is not None:
        document = {"sidecar_variants": list(settings.sidecar_variants), "sidecar": sidecar}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nResults written to {path}")
    return 1 if sum(row["errors"] for row in sidecar["rows"]) else 0


def _edge_only_output(edge: EdgeJson | None, where: Placement, path: Path | None) -> int:
    from bench.edge_report import print_edge_report

    if edge is None:
        return 1  # skipped, said why
    print_edge_report(edge, where)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"edge": edge}, indent=2) + "\n")
        print(f"\nResults written to {path}")
    return 1 if _edge_errors(edge) else 0


def _shop_only_output(shop: ShopJson, where: Placement, path: Path | None) -> int:
    from bench.shop_report import print_shop_report

    print_shop_report(shop, where)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"shop": shop}, indent=2) + "\n")
        print(f"\nResults written to {path}")
    return 1 if _shop_errors(shop) else 0


def _shop_errors(shop: ShopJson | None) -> int:
    """Failed calls of the shop part: its rows', the orders placed one at a time, and
    events the consumer never got."""
    if shop is None:
        return 0
    lost = sum(
        max(0, phase["expected"] - phase["events"])
        for phase in shop["relay"]
        if phase["expected"] is not None
    )
    return sum(row["errors"] for row in shop["rows"]) + shop["idle_orders"]["errors"] + lost


def _edge_errors(edge: EdgeJson | None) -> int:
    """Failed calls of the edge rows but the candidate servers' (the report shows
    theirs): a server the edge does not run on does not fail the run."""
    if edge is None:
        return 0
    return sum(row["errors"] for row in edge["rows"] if not row["candidate"])


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
    edge_text = (
        f"; then the edge rows: {EDGE_SUBJECTS} subjects x {settings.rounds} rounds with the "
        "same windows, loaded by h2load"
        if settings.edge
        else ""
    )
    shop_text = (
        f"; then the shop part: GetProduct and PlaceOrder x {settings.rounds} rounds with the "
        f"same windows, {settings.shop_concurrency} in flight per load process, and the "
        "outbox relay's latency"
        if settings.shop
        else ""
    )
    progress.report(
        f"ShopMesh benchmark, the edge rows only ({int(settings.estimate)} s)"
        if settings.edge_only
        else f"ShopMesh benchmark, the shop part only ({int(settings.estimate)} s)"
        if settings.shop_only
        else f"ShopMesh benchmark: {SUBJECTS} subjects x {settings.rounds} rounds, each window "
        f"{settings.warmup:g} s warm-up + {settings.window:g} s measured "
        f"(about {int(settings.estimate // 60)} min {int(settings.estimate % 60):02d} s in all); "
        f"{settings.workers} load processes x {settings.concurrency} in flight"
        + (
            f"; then in each round {SIDECAR_WINDOWS} sidecar windows ("
            + ", ".join(f"{w:g} + {m:g} s" for w, m in settings.sidecar_timing)
            + " per pair), and at the end "
            f"{CHANGES} registry changes"
            if settings.sidecar
            else ""
        )
        + edge_text
        + shop_text
    )
    progress.report(f"placement: {progress.placement_text(where)}")
    try:
        summary = asyncio.run(_run_all(settings, where, progress))
    except KeyboardInterrupt:
        progress.report("interrupted: everything started has been stopped")
        return 130
    except Exception as error:  # a failure to start, to set up or to load: exit 1
        from mesh.errors import MeshError

        if not isinstance(error, LoadFailed | MeshError | OSError | TimeoutError):
            traceback.print_exc()
        progress.report(f"FAILED: {type(error).__name__}: {error}")
        return 1
    if isinstance(summary, _SidecarOnly):
        return _sidecar_only_output(summary.sidecar, settings, where, args.json)
    if isinstance(summary, _EdgeOnly):
        return _edge_only_output(summary.edge, where, args.json)
    if isinstance(summary, _ShopOnly):
        return _shop_only_output(summary.shop, where, args.json)
    print_report(summary, where)
    if summary["sidecar"] is not None:
        print_sidecar_report(summary["sidecar"], where)
    if summary["edge"] is not None:
        from bench.edge_report import print_edge_report

        print_edge_report(summary["edge"], where)
    if summary["shop"] is not None:
        from bench.shop_report import print_shop_report

        print_shop_report(summary["shop"], where)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nResults written to {args.json}")
    errors = sum(row["errors"] for row in summary["subjects"])
    if summary["sidecar"] is not None:
        errors += sum(row["errors"] for row in summary["sidecar"]["rows"])
    errors += _edge_errors(summary["edge"])
    errors += _shop_errors(summary["shop"])
    if errors:
        print(f"\n{errors} calls failed: see the error samples above", file=sys.stderr)
        return 1
    return 0
