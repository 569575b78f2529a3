"""The driver's edge part: the REST edge's HTTP/JSON calls against Envoy's
grpc_json_transcoder and against direct gRPC, over one backend, and the edge's HTTP
server and JSON candidates.

One backend for every subject: `python -m bench.product_server --seed 3`, the
product service's own servicer and store on a bare plaintext grpc.aio (uvloop)
server. In front of it, each started once for the whole part:
- Envoy 1.40 with grpc_json_transcoder from generated/shop.binpb (bench.edge_envoy);
- the edge, `python -m gateway` standalone (its httptools server, orjson);
- the same Site and Edge on each other HTTP server installed (bench.edge_server:
  aiohttp's low-level server, uvicorn with a raw ASGI callable).

Each subject's answer is checked once (the product, and Envoy's JSON against the
edge's), then the subjects are interleaved in rounds like the main rows: every round
measures a window of each, in order, after a warm-up. The load is h2load on the load
core (bench.h2load), the same in-flight count for all: HTTP/1.1 keep-alive with one
connection per request in flight for the JSON subjects, and for direct gRPC h2c with
all of them on one connection, as the backend sees them behind Envoy or the edge.

Where they run: the backend and every front on the server core, so a front and the
backend behind it share it (as a sidecar shares its app's); h2load and the driver on
the load core. Before the rounds, the JSON candidates (bench.edge_json) run in a
process of their own on the server core, while it idles.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from bench import placement as pinning
from bench.aio import to_completion
from bench.edge_results import BACKEND, EdgeSubject, edge_summary
from bench.h2load import H2load, grpc_frame, h2load_binary
from bench.load import LoadFailed, Window
from bench.placement import Placement, cpu_list
from bench.results import SubjectResult
from bench.summary import EdgeJson, JsonCaseJson, ThreadPlacement

if TYPE_CHECKING:
    from bench.report import Progress

__all__ = [
    "CANDIDATE_PINS",
    "DIRECT",
    "EDGE",
    "EDGE_SUBJECTS",
    "ENVOY",
    "PRODUCT_ID",
    "available_servers",
    "candidate_name",
    "gateway_port",
    "missing_pins",
    "run_edge",
    "version_in",
]

REPO = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = REPO / "generated" / "shop.binpb"
SERVICE = "shop.product.v1.ProductService"
GET_PRODUCT = f"/{SERVICE}/GetProduct"
SEED = 3
PRODUCT_ID = "sku-1"
PATH = f"/v1/products/{PRODUCT_ID}"
JSON_BUDGET = 3.0  # seconds of the JSON candidates' microbenchmark
START_TIMEOUT = 30.0

DIRECT_KEY, ENVOY_KEY, EDGE_KEY = "direct_grpc", "envoy", "edge"  # in the ratios' keys
DIRECT = "direct gRPC GetProduct"
ENVOY = "Envoy grpc_json_transcoder"
EDGE = "the edge (python -m gateway)"
CANDIDATE_PINS = {"aiohttp": "3.14.5", "uvicorn": "0.54.0"}
"""The HTTP server candidates besides the edge's own, and the versions `make bench`
installs (they are not dependencies of the project)."""
EDGE_SUBJECTS = 3 + len(CANDIDATE_PINS)  # direct gRPC, Envoy, the edge, the candidates

_GATEWAY_READY = re.compile(r"^gateway: \d+ routes on http://[^\s:]+:(\d+) ")
_VERSION = re.compile(r"(?<![\w.])(\d+\.\d+\.\d+)(?![\w.])")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Tick = Callable[[str], Callable[[str], None]]


def candidate_name(server: str) -> str:
    return {
        "aiohttp": "the edge on aiohttp's low-level server",
        "uvicorn": "the edge on uvicorn, raw ASGI",
    }.get(server, f"the edge on {server}")


def gateway_port(line: str) -> int | None:
    """The port in `python -m gateway`'s ready line ("gateway: 17 routes on
    http://127.0.0.1:8080 -> 127.0.0.1:50051"); None for any other line."""
    match = _GATEWAY_READY.match(line)
    return int(match.group(1)) if match else None


def _digits(line: str) -> int | None:
    text = line.strip()
    return int(text) if text.isdigit() else None


def available_servers() -> tuple[list[str], dict[str, str]]:
    """The candidate servers installed (in CANDIDATE_PINS' order), and why the others
    are not measured."""
    found, skipped = [], {}
    for name, pin in CANDIDATE_PINS.items():
        if importlib.util.find_spec(name) is None:
            skipped[name] = f"not installed (make bench installs {name}=={pin})"
        else:
            found.append(name)
    return found, skipped


def missing_pins() -> list[str]:
    """The candidate servers not installed at their pinned version, as pip requirements
    (`make bench` installs them)."""
    return [f"{name}=={pin}" for name, pin in CANDIDATE_PINS.items() if _version(name) != pin]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def version_in(text: str) -> str:
    """The first dotted version ("1.40.0") in a tool's --version output, or "unknown"."""
    match = _VERSION.search(text)
    return match.group(1) if match else "unknown"


def _tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return version_in(done.stdout + done.stderr)


def _versions(servers: Sequence[str], h2load: str) -> dict[str, str]:
    from mesh.errors import MeshError
    from mesh.process import find_binary

    try:
        envoy = _tool_version([find_binary("envoy"), "--version"])
    except MeshError:
        envoy = "not found"
    found = {
        "envoy": envoy,
        "h2load": _tool_version([h2load, "--version"]),
        "httptools": _version("httptools"),
        "orjson": _version("orjson"),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
    }
    for name in servers:
        found[name] = _version(name)
    return found


@asynccontextmanager
async def _process(
    argv: Sequence[str],
    log_path: Path,
    cpus: frozenset[int] | None,
    port_of: Callable[[str], int | None],
    what: str,
) -> AsyncIterator[tuple[int, int]]:
    """Run `argv` (a server that prints a line `port_of` finds its port in when it
    serves) on `cpus`, in its own session; yields (pid, port); stopped on exit."""
    from mesh.process import owned_command, stop_process

    with log_path.open("ab") as log, pinning.launching_on(cpus):
        process = await asyncio.create_subprocess_exec(
            *owned_command(list(argv)),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # a terminal's Ctrl-C reaches the driver only
        )
    try:
        assert process.stdout is not None
        port = None
        async with asyncio.timeout(START_TIMEOUT):
            while port is None:
                line = (await process.stdout.readline()).decode(errors="replace")
                if not line:
                    await process.wait()
                    raise LoadFailed(
                        f"{what} did not start (exit code {process.returncode}):\n"
                        + _tail(log_path)
                    )
                port = port_of(line)
        yield process.pid, port
    finally:
        await to_completion(stop_process(process, 5.0))


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with _NO_PROXY.open(url, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read()


async def _answer_of(url: str, what: str) -> dict[str, object]:
    """The JSON a subject answers the load's request with; LoadFailed if it is not
    the product."""
    status, body = await asyncio.to_thread(_get, url)
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    product = document.get("product") if isinstance(document, dict) else None
    if status != 200 or not isinstance(product, dict) or product.get("productId") != PRODUCT_ID:
        raise LoadFailed(f"{what} answered {status} {body[:300]!r} to GET {url}")
    assert isinstance(document, dict)
    return document


async def _check_grpc(address: str) -> None:
    import grpc
    from shop.product.v1 import product_pb2

    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            GET_PRODUCT,
            request_serializer=product_pb2.GetProductRequest.SerializeToString,
            response_deserializer=product_pb2.GetProductResponse.FromString,
        )
        answer = await call(product_pb2.GetProductRequest(product_id=PRODUCT_ID), timeout=10)
    if answer.product.product_id != PRODUCT_ID:
        raise LoadFailed(f"the backend answered GetProduct with {answer}")


async def _json_candidates(cpus: frozenset[int] | None, logs: Path) -> list[JsonCaseJson]:
    log_path = logs / "edge-json.log"
    with log_path.open("ab") as log, pinning.launching_on(cpus):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.edge_json",
            "--budget",
            str(JSON_BUDGET),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), JSON_BUDGET * 3 + 30)
    finally:
        if process.returncode is None:
            from mesh.process import stop_process

            await to_completion(stop_process(process, 2.0))
    if process.returncode != 0:
        raise LoadFailed(f"bench.edge_json failed ({process.returncode}):\n{_tail(log_path)}")
    cases: list[JsonCaseJson] = json.loads(out)
    return cases


@dataclass
class _Subject:
    edge: EdgeSubject
    load: H2load
    front_pid: int
    tracked: dict[str, int]


def _edge_window_line(
    number: int, rounds: int, subject: SubjectResult, window: Window, name_width: int
) -> str:
    from bench.load import percentile

    latencies = sorted(window.latencies)

    def pct(seconds: float) -> str:
        return f"{window.percent(seconds):.0f}%"

    backend = window.tracked_cpu.get(BACKEND)
    return (
        f"round {number}/{rounds}  {subject.row} {subject.name:<{name_width}} "
        f"{window.calls_per_second:>6,.0f}/s  p50 {1000 * percentile(latencies, 0.5):5.1f} ms  "
        f"p99 {1000 * percentile(latencies, 0.99):5.1f} ms  {window.errors} errors  CPU: "
        f"front {pct(window.server_cpu)}"
        + (f", backend {pct(backend)}" if backend is not None else "")
        + f", h2load {pct(sum(window.client_cpu))}, other {pct(window.other_cpu)}"
    )


async def run_edge(
    *,
    rounds: int,
    warmup: float,
    window: float,
    in_flight: int,
    where: Placement,
    progress: Progress,
) -> EdgeJson | None:
    """The edge part (see the module's docstring); None, said so, without h2load."""
    import tempfile

    h2load = h2load_binary()
    if h2load is None:
        progress.report(
            "edge rows skipped: no h2load on PATH (`make bench` installs Debian's nghttp2-client)"
        )
        return None
    servers, skipped = available_servers()
    for name, why in skipped.items():
        progress.report(f"edge candidate {name} skipped: {why}")
    cores = f" on core {cpu_list(where.server_cpus)}" if where.server_cpus else ""
    progress.report(
        f"edge rows: starting the backend, Envoy, the edge and {len(servers)} candidate "
        f"servers{cores}"
    )
    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-edge-") as tmp:
        root = Path(tmp)
        async with AsyncExitStack() as stack:
            subjects, same_json = await _start(stack, root, servers, in_flight, where, progress)
            progress.report(f"edge rows: JSON candidates ({JSON_BUDGET:g} s, server core)")
            cases = await _json_candidates(where.server_cpus, root)
            if where.load_cpus is not None:
                # asyncio waits for each child in a thread of its own, started while
                # this thread launched the child on the server core: they belong here.
                pinning.pin_threads(os.getpid(), where.load_cpus)
            for number in range(1, rounds + 1):
                await _round(
                    subjects, number, rounds, h2load, root, warmup, window, where, progress
                )
            placed = _placement_check(where, subjects, os.getpid())
    return edge_summary(
        [s.edge for s in subjects],
        settings={
            "rounds": rounds,
            "window_s": window,
            "warmup_s": warmup,
            "in_flight": in_flight,
            "order_each_round": [s.edge.result.name for s in subjects],
            "placement": _placement_text(where),
            "url": f"GET {PATH}",
            "skipped": skipped,
        },
        versions=await asyncio.to_thread(_versions, servers, h2load),
        cores=where.cores,
        same_json=same_json,
        json_candidates=cases,
        placement_check=placed,
    )


async def _round(
    subjects: Sequence[_Subject],
    number: int,
    rounds: int,
    h2load: str,
    root: Path,
    warmup: float,
    window: float,
    where: Placement,
    progress: Progress,
) -> None:
    """One window of each subject, in order; the round's ratios."""
    from bench.report import NAME

    everyone = [s.front_pid for s in subjects]
    for subject in subjects:
        result = subject.edge.result
        measured = await subject.load.measure(
            h2load,
            root,
            warmup=warmup,
            duration=window,
            cpus=where.load_cpus,
            server_pid=subject.front_pid,
            background_pids=[
                pid
                for pid in everyone
                if pid != subject.front_pid and pid not in subject.tracked.values()
            ],
            tracked=subject.tracked,
            tick=progress.ticker(f"round {number}/{rounds}, {result.row} {result.name}:"),
        )
        result.windows.append(measured)
        progress.report(_edge_window_line(number, rounds, result, measured, NAME))
        for sample in measured.error_samples:
            progress.report(f"  ! {sample}")
    direct, envoy, edge = (s.edge.result for s in subjects[:3])
    progress.report(
        f"round {number} edge: calls/s the edge / Envoy "
        f"{edge.per_round[-1] / max(envoy.per_round[-1], 1e-9):.3f}, the edge / direct gRPC "
        f"{edge.per_round[-1] / max(direct.per_round[-1], 1e-9):.3f}"
    )


@dataclass(frozen=True)
class _Front:
    """A process the HTTP load reaches, with the backend behind it."""

    key: str
    name: str
    detail: str
    pid: int
    port: int
    python_front: bool = True
    candidate: bool = False


async def _start(
    stack: AsyncExitStack,
    root: Path,
    servers: Sequence[str],
    in_flight: int,
    where: Placement,
    progress: Progress,
) -> tuple[list[_Subject], bool]:
    """Every process of the part, started on the server core and checked; the
    subjects in the rounds' order, and whether Envoy and the edge answer alike."""
    from bench.edge_envoy import edge_envoy

    cpus = where.server_cpus
    backend_pid, backend_port = await stack.enter_async_context(
        _process(
            [sys.executable, "-m", "bench.product_server", "--seed", str(SEED)],
            root / "backend.log",
            cpus,
            _digits,
            "the backend (bench.product_server)",
        )
    )
    upstream = f"127.0.0.1:{backend_port}"
    await _check_grpc(upstream)
    progress.report(
        f"  backend: bench.product_server {upstream} (pid {backend_pid}), plaintext, uvloop, "
        f"the product servicer over a store of {SEED} products"
    )
    envoy = await stack.enter_async_context(
        edge_envoy(
            DESCRIPTOR_SET, [SERVICE], upstream=("127.0.0.1", backend_port), workdir=root, cpus=cpus
        )
    )
    progress.report(
        f"  Envoy: http://127.0.0.1:{envoy.port} (pid {envoy.pid}, admin {envoy.admin}), "
        "--concurrency 1, grpc_json_transcoder, h2c to the backend"
    )
    fronts = [
        _Front(ENVOY_KEY, ENVOY, "grpc_json_transcoder, 1 worker, h2c upstream", envoy.pid,
               envoy.port, python_front=False),
    ]  # fmt: skip
    gateway = [sys.executable, "-m", "gateway", "--descriptor-set", str(DESCRIPTOR_SET),
               "--upstream", upstream, "--upstream-plaintext", "--listen", "127.0.0.1:0"]  # fmt: skip
    pid, port = await stack.enter_async_context(
        _process(gateway, root / "gateway.log", cpus, gateway_port, "the edge (python -m gateway)")
    )
    progress.report(
        f"  the edge: http://127.0.0.1:{port} (pid {pid}), python -m gateway, gateway._http "
        "(httptools) and orjson, uvloop"
    )
    fronts.append(_Front(EDGE_KEY, EDGE, "gateway._http (httptools), orjson", pid, port))
    for server in servers:
        candidate = [sys.executable, "-m", "bench.edge_server", "--server", server,
                     "--descriptor-set", str(DESCRIPTOR_SET), "--upstream", upstream]  # fmt: skip
        pid, port = await stack.enter_async_context(
            _process(candidate, root / f"edge-{server}.log", cpus, _digits, candidate_name(server))
        )
        progress.report(f"  {candidate_name(server)}: http://127.0.0.1:{port} (pid {pid})")
        detail = f"same Site and Edge, {server} {_version(server)}"
        fronts.append(_Front(server, candidate_name(server), detail, pid, port, candidate=True))

    subjects = [_direct_subject(root, upstream, backend_pid, in_flight)]
    answers = {}
    for row, front in enumerate(fronts, start=2):
        url = f"http://127.0.0.1:{front.port}{PATH}"
        answers[front.key] = await _answer_of(url, front.name)
        edge = EdgeSubject(
            front.key,
            SubjectResult(row, front.name, front.detail),
            f"HTTP/1.1 keep-alive, {in_flight} connections",
            in_flight,
            python_front=front.python_front,
            behind_front=True,
            candidate=front.candidate,
        )
        load = H2load(url, connections=in_flight, streams=1, h1=True)
        subjects.append(_Subject(edge, load, front.pid, {BACKEND: backend_pid}))
    for key, answer in answers.items():
        if answer != answers[EDGE_KEY]:
            progress.report(f"  NOTE: {key} answers {answer}, the edge {answers[EDGE_KEY]}")
    return subjects, answers[ENVOY_KEY] == answers[EDGE_KEY]


def _direct_subject(root: Path, upstream: str, backend_pid: int, in_flight: int) -> _Subject:
    """GetProduct on the backend itself: h2c, all calls in flight on one connection."""
    from shop.product.v1 import product_pb2

    body_file = root / "get-product.grpc"
    request = product_pb2.GetProductRequest(product_id=PRODUCT_ID).SerializeToString()
    body_file.write_bytes(grpc_frame(request))
    load = H2load(
        f"http://{upstream}{GET_PRODUCT}",
        connections=1,
        streams=in_flight,
        h1=False,
        body_file=body_file,
        headers=(("content-type", "application/grpc"), ("te", "trailers")),
    )
    edge = EdgeSubject(
        DIRECT_KEY,
        SubjectResult(1, DIRECT, "the backend itself, h2c"),
        f"h2c, 1 connection x {in_flight} streams",
        in_flight,
        python_front=True,
        behind_front=False,
    )
    return _Subject(edge, load, backend_pid, {})


def _placement_check(
    where: Placement, subjects: Sequence[_Subject], driver: int
) -> dict[str, ThreadPlacement]:
    """Every thread of every server and of the driver, and the cores it may run on,
    against the plan (h2load is gone by now: it is pinned at its start)."""
    if where.server_cpus is None or where.load_cpus is None:
        return {}
    processes = [(s.edge.key, s.front_pid, where.server_cpus) for s in subjects]
    processes[0] = ("backend", subjects[0].front_pid, where.server_cpus)  # direct gRPC's
    checked: dict[str, ThreadPlacement] = {}
    for label, pid, cpus in [*processes, ("driver", driver, where.load_cpus)]:
        threads, stray = pinning.stray_threads(pid, cpus)
        checked[label] = {
            "pid": pid,
            "cpus": cpu_list(cpus),
            "threads": threads,
            "threads_elsewhere": stray,
        }
    return checked


def _placement_text(where: Placement) -> str:
    if where.server_cpus is None or where.load_cpus is None:
        return where.note
    return (
        f"the backend, Envoy and every edge on core {cpu_list(where.server_cpus)} (the "
        f"servers'); h2load and the driver on core {cpu_list(where.load_cpus)}"
    )
