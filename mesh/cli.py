"""meshctl: start, inspect, restart and stop a ShopMesh mesh; make certificates and code.

Exit codes: 0 done, 1 the operation failed (the message says why), 2 bad usage or
configuration. `meshctl status --json` prints a list of objects, one per service
instance, with service, id, address, version, health, metrics, pid and restarts;
fields are only ever added. `meshctl status` answers from the supervisor's state.json
and direct health checks while etcd is down, and says the mesh is not running when its
supervisor is gone. `meshctl restart <service>` asks the running supervisor, over its
control socket, for a rolling restart, and prints each step as it is done. `meshctl
config schema` prints the JSON Schema of mesh.yaml, each service's settings included
(asked of the service's module in a child process: meshctl imports no service code).

Live traffic, on a running mesh: `meshctl traffic <service>` shows a service's split of
calls over its versions (declared, live, and per sidecar, with drift), `--weights
v1=90,v2=10` or `--switch v2` sets it and waits until every sidecar routes by it;
`meshctl canary <service> <version>` moves calls to a version step by step and rolls
back when a method's error rate breaks the bound (exit 1); `meshctl policy <service>`
says which data plane applies which of its policies; `meshctl apply` pushes mesh.yaml's
authz table; `meshctl fault <service> <method> --fail 30` fails (or `--delay 200`
delays) a share of a method's calls in every instance, until `--clear`. `--json`
output of traffic, policy and fault, like status's, only gains fields.

`meshctl events <stream>` prints a stream's events from the broker, oldest first, each
payload as proto3 JSON (`--json`: one array); exit 1 if it has none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mesh.codegen import CodegenError, Layout, check, generate, stage_third_party
from mesh.config import ADMIN_IDENTITY, MeshConfig, load_config, mesh_schema
from mesh.errors import BrokerUnavailable, ConfigError, MeshError, RegistryUnavailable
from mesh.identity import ensure_certificates
from mesh.registry import EtcdClient
from mesh.state import SUPERVISOR_MARKERS, etcd_endpoint, process_running
from mesh.supervisor import (
    CONFIRM_TIMEOUT,
    CanaryPlan,
    ControlRequest,
    DemoError,
    DemoStep,
    EventDecoder,
    InstanceStatus,
    MeshAlreadyRunning,
    MeshState,
    ProtocolError,
    Rollout,
    Supervisor,
    TrafficReport,
    apply_authz,
    clear_faults,
    clear_state,
    default_descriptor_set,
    events_text,
    fault_report,
    fault_report_text,
    fetch_token,
    format_fault,
    format_weights,
    live_weights,
    log_tail,
    mesh_status,
    parse_error_rate,
    parse_fault,
    parse_interval,
    parse_method,
    parse_steps,
    parse_weights,
    policy_rows,
    read_state,
    relative_path,
    run_canary,
    run_demo,
    send_command,
    set_fault,
    set_weights,
    show_events,
    stream_events,
    supervisor_status,
    traffic_report,
)

__all__ = ["SCHEMA_FILE", "main"]


def _say(message: str) -> None:
    print(message, flush=True)


def _fail(message: str, code: int = 1) -> int:
    print(f"meshctl: {message}", file=sys.stderr, flush=True)
    return code


# -- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Status:
    rows: list[InstanceStatus]
    state: MeshState | None  # None: no meshctl up here (an external etcd's instances)
    etcd: str  # the endpoint asked
    etcd_answered: bool
    events: str = ""  # the line about the event broker, "" if none is known


def _not_running(state: MeshState | None) -> str:
    if state is None:
        return "no mesh is running here; start one with `meshctl up`"
    return (
        f"the mesh is not running: its supervisor (pid {state.supervisor_pid}) is gone; "
        "start it again with `meshctl up`"
    )


def _live_state(config: MeshConfig) -> MeshState | None:
    """The state of the mesh started here, None if none was; raises MeshError if one
    was started and its supervisor is gone (its state.json would tell stale pids)."""
    state = read_state(config.state_dir)
    if state is not None and not state.supervisor_alive():
        raise MeshError(_not_running(state))
    return state


async def _status(config: MeshConfig) -> _Status:
    state = _live_state(config)
    endpoint = etcd_endpoint(config)
    if endpoint is None:
        raise MeshError(_not_running(None))
    events = _events_line(config, state)
    try:
        async with EtcdClient(endpoint, timeout=2.0) as etcd:
            return _Status(await mesh_status(config, etcd, state), state, endpoint, True, events)
    except RegistryUnavailable as error:
        if state is None:
            raise
        # The supervisor knows its instances: check them where they serve.
        _warn(f"etcd is unreachable ({error}); showing what the supervisor knows")
        return _Status(await supervisor_status(config, state), state, endpoint, False, events)


def _warn(message: str) -> None:
    print(f"meshctl: {message}", file=sys.stderr, flush=True)


def _table(rows: Sequence[InstanceStatus]) -> str:
    header: tuple[str, ...] = (
        "SERVICE", "ID", "ADDRESS", "VERSION", "HEALTH", "METRICS", "PID", "RESTARTS",
    )  # fmt: skip
    sidecars = any(r.envoy_admin for r in rows)
    if sidecars:
        header = (*header, "ENVOY ADMIN")
    urls = any(r.url for r in rows)
    if urls:
        header = (*header, "URL")
    cells = [header] + [
        (
            r.service,
            r.id,
            r.address or "-",
            r.version,
            r.health + (" (xDS NACK)" if r.xds_nacks else ""),
            r.metrics or "-",
            str(r.pid or "-"),
            str(r.restarts),
            *((f"http://{r.envoy_admin}" if r.envoy_admin else "-",) if sidecars else ()),
            *((r.url or "-",) if urls else ()),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _etcd_line(status: _Status) -> str:
    """The line under the table about etcd (not in --json: its list is of instances)."""
    answer = "" if status.etcd_answered else ", not answering"
    state = status.state
    if state is None or not state.etcd_state:
        return f"etcd {status.etcd} (external{answer})"
    pid = state.etcd_pid or "-"
    return (
        f"etcd {status.etcd}: {state.etcd_state}{answer}, pid {pid}, restarts {state.etcd_restarts}"
    )


def _controlplane_line(state: MeshState | None) -> str:
    if state is None or not state.controlplane:
        return ""
    pid = state.controlplane_pid or "-"
    return (
        f"\ncontrol plane {state.controlplane}: {state.controlplane_state}, pid {pid}, "
        f"restarts {state.controlplane_restarts}"
    )


def _events_line(config: MeshConfig, state: MeshState | None) -> str:
    """The line about the event broker: the one `meshctl up` runs, or an external one."""
    broker = config.events.broker
    if state is not None and state.events_state:
        pid = state.events_pid or "-"
        return (
            f"\nevents {broker} {state.events_endpoint}: {state.events_state}, pid {pid}, "
            f"restarts {state.events_restarts}"
        )
    endpoint = config.events.endpoint or (state.events_endpoint if state is not None else "")
    return f"\nevents {broker} {endpoint} (external)" if endpoint else ""


def _nack_lines(rows: Sequence[InstanceStatus]) -> str:
    """Each config a sidecar refused, with Envoy's reason (cut to one line)."""
    lines = [
        f"\n! {row.id}'s Envoy refused its {kind.rsplit('.', 1)[-1]} config: "
        f"{detail.splitlines()[0][:300] if detail else '(no detail)'}"
        for row in rows
        for kind, detail in sorted(row.xds_nacks.items())
    ]
    return "".join(lines)


def _report(status: _Status) -> str:
    table = _table(status.rows) if status.rows else "no instances registered"
    return (
        f"{table}\n\n{_etcd_line(status)}{_controlplane_line(status.state)}{status.events}"
        f"{_nack_lines(status.rows)}"
    )


def _how_to_call(config: MeshConfig, rows: Sequence[InstanceStatus]) -> str:
    certs = relative_path(config.certs_dir)
    tls = f"-cacert {certs}/ca.crt -cert {certs}/{ADMIN_IDENTITY}.crt -key {certs}/{ADMIN_IDENTITY}.key"
    serving: dict[str, str] = {}
    for row in rows:
        if row.address and row.health == "SERVING":
            serving.setdefault(row.service, row.address)
    if not serving:
        return "No instance is serving yet; see `meshctl status`."
    first = next(iter(sorted(serving.items())))[1]
    admins = sorted((r.id, r.envoy_admin) for r in rows if r.envoy_admin and r.health == "SERVING")
    urls = sorted((r.service, r.url) for r in rows if r.url and r.health == "SERVING")
    return "\n".join(
        [
            f"Call any service with grpcurl as the {ADMIN_IDENTITY} identity, for example:",
            f"  grpcurl {tls} {first} list",
            *(
                f"  grpcurl {tls} {a} grpc.health.v1.Health/Check   # {s}"
                for s, a in sorted(serving.items())
            ),
            *(
                [
                    f"Each sidecar's Envoy admin, e.g. curl http://{admins[0][1]}/clusters"
                    f"   # {admins[0][0]}; traffic: meshctl traffic <service>"
                ]
                if admins
                else []
            ),
            *(
                [
                    f"The REST edge: curl {urls[0][1]}/v1/products   # API docs: {urls[0][1]}/docs;"
                    " a token: meshctl token <user>"
                ]
                if urls
                else []
            ),
            "Inspect: meshctl status [--json]    Stop: meshctl down (or Ctrl-C where meshctl up runs)",
            f"Logs: {relative_path(config.state_dir / 'logs')}/    Traces: {relative_path(config.state_dir / 'traces')}/",
        ]
    )


def cmd_status(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        status = asyncio.run(_status(config))
    except RegistryUnavailable as error:
        return _fail(f"cannot reach etcd: {error}")
    if args.json:
        print(json.dumps([row.to_json() for row in status.rows], indent=2))
    else:
        print(_report(status))
    return 0


def cmd_address(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        rows = asyncio.run(_status(config)).rows
    except RegistryUnavailable as error:
        return _fail(f"cannot reach etcd: {error}")
    for row in rows:
        if args.service in (row.service, row.id) and row.health == "SERVING":
            if args.url:
                if row.url:
                    print(row.url)
                    return 0
            elif not args.envoy_admin:
                print(row.address)
                return 0
            elif row.envoy_admin:
                print(f"http://{row.envoy_admin}")
                return 0
    what = "with a sidecar " if args.envoy_admin else "with a URL " if args.url else ""
    return _fail(f"no instance {what}of {args.service!r} is serving")


# -- up / down ------------------------------------------------------------------------


def cmd_up(config: MeshConfig, args: argparse.Namespace) -> int:
    if args.detach:
        return _up_detached(config, args)
    return asyncio.run(_up_foreground(config, args.timeout, demo=args.demo))


async def _up_foreground(config: MeshConfig, timeout: float, *, demo: bool = False) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    supervisor = Supervisor(config, _say)
    _say(f"Starting ShopMesh from {relative_path(config.path)}")
    _write_schema(config)
    starting = asyncio.create_task(supervisor.start(timeout))
    interrupted = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
    interrupted.cancel()
    if not starting.done():  # Ctrl-C while starting: start() stops what it started
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        _say("Stopped before the mesh was ready.")
        return 130
    try:
        starting.result()
    except MeshError as error:
        return _fail(str(error))
    try:
        status = await _status(config)
        _say("\n" + _report(status) + "\n\n" + _how_to_call(config, status.rows))
        edge_url = _edge_url(status.rows, "edge")
        if demo and edge_url is not None:
            _say("")
            await asyncio.to_thread(_demo, config, edge_url)  # a failed demo leaves the mesh up
        _say("\nRunning. Press Ctrl-C to stop every process.")
        await stop.wait()
        _say("Stopping...")
    finally:
        await supervisor.stop()
    _say("Stopped.")
    return 0


def _up_detached(config: MeshConfig, args: argparse.Namespace) -> int:
    existing = read_state(config.state_dir)
    if existing is not None and existing.supervisor_alive():
        return _fail(str(MeshAlreadyRunning(existing.supervisor_pid)))
    log_path = config.state_dir / "logs" / "supervisor.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mesh.cli",
        "--config",
        str(config.path),
        "up",
        "--timeout",
        str(args.timeout),
    ]
    with log_path.open("wb") as log:  # this run's log only, so a failure shows its own lines
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    _say(f"Starting ShopMesh in the background (pid {child.pid}, log {relative_path(log_path)})")
    state = _wait_detached_ready(config, child, args.timeout + 15)
    if state is None:
        tail = log_tail(log_path, 20)
        return _fail(f"the mesh did not start:\n{tail}")
    status = asyncio.run(_status(config))
    _say(_report(status) + "\n\n" + _how_to_call(config, status.rows))
    return 0


def _wait_detached_ready(
    config: MeshConfig, child: subprocess.Popen[bytes], timeout: float
) -> MeshState | None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if child.poll() is not None:
            return None
        state = read_state(config.state_dir)
        if state is not None and state.supervisor_pid == child.pid and state.ready:
            return state
        time.sleep(0.1)
    child.terminate()  # it stops whatever it started before exiting
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
    return None


def cmd_down(config: MeshConfig, args: argparse.Namespace) -> int:
    state = read_state(config.state_dir)
    if state is None:
        _say("No mesh is running here.")
        return 0
    budget = config.server.drain_delay + config.server.grace_period + 15
    if state.supervisor_alive():
        os.kill(state.supervisor_pid, signal.SIGTERM)
        _say(f"Stopping the mesh (supervisor pid {state.supervisor_pid})...")
        until = time.monotonic() + budget
        while state.supervisor_alive() and time.monotonic() < until:
            time.sleep(0.1)
    leftovers = _kill_leftovers(state)
    clear_state(config.state_dir)
    _say("Stopped." + (f" Killed {leftovers} leftover process(es)." if leftovers else ""))
    return 0


def _kill_leftovers(state: MeshState) -> int:
    """Kill what a crashed or stuck supervisor left behind, checking each pid is ours."""
    expected: dict[int, tuple[str, ...]] = {
        r.pid: (r.instance_id,) for r in state.instances if r.pid is not None
    }
    if state.etcd_pid:
        expected[state.etcd_pid] = ("etcd",)
    if state.events_pid:
        expected[state.events_pid] = ("nats-server",)
    expected[state.supervisor_pid] = SUPERVISOR_MARKERS
    killed = 0
    for pid, markers in expected.items():
        if pid != os.getpid() and process_running(pid, markers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


# -- restart --------------------------------------------------------------------------

_RESTART_IDLE = 180.0
"""Seconds meshctl waits for the supervisor's next step: longer than any one step (an
instance's start, or its drain and grace period) takes."""


def cmd_restart(config: MeshConfig, args: argparse.Namespace) -> int:
    config.service(args.service)  # an unknown service is bad usage: ConfigError, exit 2
    state = read_state(config.state_dir)
    if state is None or not state.supervisor_alive():
        return _fail(_not_running(state))
    if not state.control:
        return _fail(
            "this mesh's supervisor takes no requests (an older meshctl started it); "
            "run `meshctl down` and `meshctl up`"
        )
    return asyncio.run(_restart(state.control, args.service))


async def _restart(control: str, service: str) -> int:
    """Print each step the supervisor reports; the exit code its final event gives."""
    try:
        async for event in send_command(
            control, ControlRequest("restart", service), idle_timeout=_RESTART_IDLE
        ):
            if event.kind == "failed":
                code = _fail(event.message, event.code or 1)
                if event.log:
                    print(f"its log ends with:\n{event.log}", file=sys.stderr)
                return code
            _say(event.message)
    except (OSError, ProtocolError, TimeoutError) as error:
        return _fail(f"no answer from the supervisor on {control}: {error or 'timed out'}")
    return 0


# -- traffic / canary / policy / apply -------------------------------------------------

_T = TypeVar("_T")


async def _on_mesh_etcd(config: MeshConfig, work: Callable[[EtcdClient], Awaitable[_T]]) -> _T:
    """`work` with the etcd of the running mesh (found as `meshctl status` finds it)."""
    _live_state(config)  # a supervisor that is gone: say so rather than time out
    endpoint = etcd_endpoint(config)
    if endpoint is None:
        raise MeshError(_not_running(None))
    async with EtcdClient(endpoint, timeout=2.0) as etcd:
        return await work(etcd)


def _live(config: MeshConfig, work: Callable[[EtcdClient], Awaitable[int]]) -> int:
    """Run a live command: bad flags exit 2, an unreachable etcd exits 1, saying so."""
    try:
        return asyncio.run(_on_mesh_etcd(config, work))
    except ConfigError as error:
        return _fail(str(error), code=2)
    except RegistryUnavailable as error:
        return _fail(f"cannot reach etcd: {error}; is the mesh running? (`meshctl status`)")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _rollout_lines(rollout: Rollout) -> list[str]:
    cells = []
    for c in rollout.sidecars:
        if c.confirmed:
            state = f"in {_ms(c.seconds or 0.0)}"
        else:
            state = f"NOT within {rollout.timeout:g}s: " + (
                c.error or f"shows {format_weights(c.weights)}"
            )
        beaten = {v: w for v, w in c.overrides.items() if w != rollout.weights.get(v, 0)}
        if beaten:
            state += f" (its runtime override {format_weights(beaten)} wins there)"
        cells.append((c.instance, c.admin, format_weights(c.weights), state))
    return _columns(cells, indent="  ")


def _columns(rows: Sequence[tuple[str, ...]], indent: str = "") -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def _say_rollout(rollout: Rollout) -> int:
    _say(f"{rollout.service}: {format_weights(rollout.weights)} written to etcd")
    for line in _rollout_lines(rollout):
        _say(line)
    if not rollout.sidecars:
        _say("no sidecars registered; the proxyless clients read the split from etcd")
        return 0
    if not rollout.confirmed:
        late = sum(not c.confirmed for c in rollout.sidecars)
        return _fail(
            f"{late} of {len(rollout.sidecars)} sidecars do not route by it after "
            f"{rollout.timeout:g}s (the split is in etcd; is the control plane up? see "
            "`meshctl status`)"
        )
    _say(
        f"all {len(rollout.sidecars)} sidecars route by it, {_ms(rollout.seconds)} after the "
        "write; the proxyless clients read it from etcd"
    )
    return 0


def _traffic_report_text(report: TrafficReport) -> str:
    live = (
        f"{format_weights(report.live)}  (etcd)"
        if report.live is not None
        else "as declared  (etcd holds no split)"
    )
    lines = [
        f"{report.service}: versions {', '.join(report.versions)}",
        f"  declared   {format_weights(report.declared)}  (mesh.yaml)",
        f"  live       {live}",
        f"  proxyless  {format_weights(report.in_force)}  (the split in force, read from etcd)",
    ]
    if not report.sidecars:
        return "\n".join([*lines, "  no sidecars registered"])
    rows = [("INSTANCE", "ADMIN", "XDS WEIGHTS", "OVERRIDES", "STATE")]
    for s in report.sidecars:
        state = (
            s.error or ("DRIFTED" if s.drifted else "") or ("not in force yet" if s.stale else "ok")
        )
        rows.append(
            (s.instance, s.admin, format_weights(s.xds), format_weights(s.overrides or None), state)
        )
    return "\n".join([*lines, "  sidecars:", *_columns(rows, indent="    ")])


def _edge_url(rows: Sequence[InstanceStatus], edge: str) -> str | None:
    """The HTTP URL of a serving instance of the edge, if one is up."""
    urls = [row.url for row in rows if row.service == edge and row.url and row.health == "SERVING"]
    return urls[0] if urls else None


def _running_edge(config: MeshConfig, edge: str) -> str:
    """The HTTP URL of a serving instance of the running mesh's `edge`.

    Raises:
        MeshError: etcd cannot be reached, or no instance of `edge` serves HTTP.
    """
    try:
        rows = asyncio.run(_status(config)).rows
    except RegistryUnavailable as error:
        raise MeshError(f"cannot reach etcd: {error}") from error
    url = _edge_url(rows, edge)
    if url is None:
        raise MeshError(f"no instance of {edge!r} serves HTTP: is the mesh up?")
    return url


def cmd_token(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        url = _running_edge(config, args.edge)
        token = fetch_token(url, args.user, password=args.password, state_dir=config.state_dir)
    except MeshError as error:  # TokenError among them
        return _fail(str(error))
    print(token)
    return 0


def cmd_demo(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        url = _running_edge(config, args.edge)
    except MeshError as error:
        return _fail(str(error))
    return _demo(config, url, as_json=args.json)


def _demo(config: MeshConfig, edge_url: str, *, as_json: bool = False) -> int:
    """Run the demo against `edge_url`, printing each step (or, with `as_json`, one
    JSON array at the end); 1 if a step failed."""

    def say(step: DemoStep) -> None:
        if not as_json:
            trace = f"\n      trace {step.trace_id}" if step.trace_id else ""
            _say(f"  - {step.title}\n      {step.outcome}{trace}")

    if not as_json:
        _say(f"Demo through the REST edge at {edge_url}:")
    try:
        steps = run_demo(
            edge_url, state_dir=config.state_dir, card_limit=_card_limit(config), report=say
        )
    except DemoError as error:
        return _fail(f"demo: {error}")
    if as_json:
        print(json.dumps([step.to_json() for step in steps], indent=2))
    else:
        traces = relative_path(config.state_dir / "traces")
        _say(f"Each trace: grep <trace id> {traces}/*.jsonl")
    return 0


def _card_limit(config: MeshConfig) -> str | None:
    """Payment's `decline.over`, if the mesh runs payment with one."""
    if "payment" not in config.services:
        return None
    decline = config.service("payment").settings.get("decline") or {}
    limit = decline.get("over") if isinstance(decline, dict) else None
    return str(limit) if limit else None


def cmd_traffic(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        weights = parse_weights(args.weights) if args.weights is not None else None
    except ConfigError as error:
        return _fail(str(error), code=2)

    async def work(etcd: EtcdClient) -> int:
        if weights is None and args.switch is None:
            report = await traffic_report(config, etcd, args.service)
            print(
                json.dumps(report.to_json(), indent=2)
                if args.json
                else _traffic_report_text(report)
            )
            return 0
        rollout = await set_weights(
            config, etcd, args.service, weights=weights, switch=args.switch, timeout=args.timeout
        )
        if args.json:
            print(json.dumps(rollout.to_json(), indent=2))
            return 0 if rollout.confirmed else 1
        return _say_rollout(rollout)

    return _live(config, work)


def cmd_canary(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        plan = CanaryPlan(
            service=args.service,
            version=args.version,
            steps=parse_steps(args.steps),
            interval=parse_interval(args.interval),
            max_error_rate=parse_error_rate(args.max_error_rate),
        )
    except ConfigError as error:
        return _fail(str(error), code=2)

    async def work(etcd: EtcdClient) -> int:
        result = await run_canary(config, etcd, plan, _say)
        if result.promoted:
            return 0
        method = result.breach.method if result.breach else "a method"
        return _fail(
            f"the canary of {plan.service} {plan.version} is rolled back: {method} "
            "broke the error rate bound"
        )

    return _live(config, work)


async def _live_split(config: MeshConfig, service: str) -> tuple[dict[str, int] | None, bool]:
    """The live split of `service` and whether it is known (False: mesh not running)."""
    try:
        return await _on_mesh_etcd(config, lambda etcd: live_weights(config, etcd, service)), True
    except MeshError:  # not running, or etcd unreachable: the table is mesh.yaml's alone
        return None, False


def cmd_policy(config: MeshConfig, args: argparse.Namespace) -> int:
    try:
        config.service(args.service)
    except ConfigError as error:
        return _fail(str(error), code=2)
    live, known = asyncio.run(_live_split(config, args.service))
    rows = policy_rows(config, args.service, live, live_known=known)
    if args.json:
        document = {
            "service": args.service,
            "dataplane": config.dataplane,
            "policies": [row.to_json() for row in rows],
        }
        print(json.dumps(document, indent=2))
        return 0
    table = [("POLICY", "DECLARED", "SIDECAR", "DIRECT")]
    table += [(r.policy, r.text, r.sidecar.note, r.direct.note) for r in rows]
    print(f"{args.service} (this mesh's data plane: {config.dataplane})")
    print("\n".join(_columns(table)))
    return 0


def cmd_apply(config: MeshConfig, args: argparse.Namespace) -> int:
    # main() loaded and validated mesh.yaml just now: a bad file exits 2 before this.
    async def work(etcd: EtcdClient) -> int:
        applied = await apply_authz(config, etcd)
        if applied.previous is None:
            was = "etcd held none: each process had its mesh.yaml's from its start"
        elif applied.changed:
            was = f"replacing a table of {len(applied.previous)} rules"
        else:
            was = "unchanged"
        _say(f"authz: {len(applied.rules)} rules written to etcd ({was})")
        planes = "every instance" + (
            " and every sidecar (through the control plane)"
            if config.dataplane == "sidecar"
            else ""
        )
        _say(f"both data planes apply it within 1 s: {planes}")
        _say(
            "Only the authz table is applied live; other changes of mesh.yaml apply when "
            "the processes that read it restart (`meshctl restart <service>`, or "
            "`meshctl down` and `meshctl up`)."
        )
        return 0

    return _live(config, work)


# -- fault / events ---------------------------------------------------------------------


_EVERY_METHOD = "*"  # `--clear` without a method


def _fault_method(args: argparse.Namespace) -> str | None:
    """The method `meshctl fault` is about (as `METHOD` or as `--clear METHOD`)."""
    method: str | None = args.method
    cleared: str | None = args.clear
    if cleared in (None, _EVERY_METHOD):
        return method
    if method is not None and method != cleared:
        raise ConfigError("--clear", f"names {cleared}, METHOD {method}: give one")
    return cleared


def cmd_fault(config: MeshConfig, args: argparse.Namespace) -> int:
    given = [args.fail, args.status, args.delay, args.delay_percent]
    clearing = args.clear is not None
    try:
        config.service(args.service)
        method = _fault_method(args)
        if clearing and any(value is not None for value in given):
            raise ConfigError("--clear", "clears a fault: give no --fail, --status or --delay")
        if method is not None:
            parse_method(method)
        setting = method is not None and not clearing
        if not setting and any(value is not None for value in given):
            raise ConfigError("METHOD", "name the method whose calls the fault is for")
        fault = (
            parse_fault(
                fail=args.fail,
                status=args.status,
                delay=args.delay,
                delay_percent=args.delay_percent,
            )
            if setting
            else None
        )
    except ConfigError as error:
        return _fail(str(error), code=2)

    async def work(etcd: EtcdClient) -> int:
        if clearing:
            cleared, report = await clear_faults(config, etcd, args.service, method)
            if args.json:
                print(json.dumps({"cleared": cleared, **report.to_json()}, indent=2))
                return 0
            what = ", ".join(cleared) if cleared else "nothing (etcd held no such fault)"
            _say(f"{args.service}: cleared {what}; mesh.yaml's faults hold again")
        elif fault is not None and method is not None:
            report = await set_fault(config, etcd, args.service, method, fault)
            if args.json:
                print(json.dumps(report.to_json(), indent=2))
                return 0
            _say(f"{args.service} {method}: {format_fault(fault)}, written to etcd")
            _say(
                f"every instance of {args.service} applies it within about a second, "
                "over mesh.yaml's; `--clear` removes it"
            )
        else:
            report = await fault_report(config, etcd, args.service)
            if args.json:
                print(json.dumps(report.to_json(), indent=2))
                return 0
        _say(fault_report_text(report))
        return 0

    return _live(config, work)


def cmd_events(config: MeshConfig, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit: at least 1, got {args.limit}", code=2)
    decoder = EventDecoder(default_descriptor_set())
    try:
        events = asyncio.run(stream_events(config, args.stream, topic=args.topic, limit=args.limit))
    except BrokerUnavailable as error:
        return _fail(f"cannot reach the event broker: {error}")
    except ValueError as error:  # the topic is no topic name
        return _fail(f"--topic: {error}", code=2)
    if not events:
        where = f" in topic {args.topic!r}" if args.topic else ""
        return _fail(f"the broker holds no events of stream {args.stream!r}{where}")
    shown = show_events(events, decoder)
    if args.json:
        print(json.dumps([item.to_json() for item in shown], indent=2, ensure_ascii=False))
    else:
        print(events_text(shown))
    return 0


# -- config schema --------------------------------------------------------------------

SCHEMA_FILE = "mesh.schema.json"
"""In the state folder: the schema `meshctl up` writes for editors (see mesh.yaml)."""

_SCHEMA_TIMEOUT = 60.0
"""Seconds the services' `--settings-schema` answers may take: it imports them all."""


def _settings_schemas(config: MeshConfig) -> dict[str, dict[str, Any]]:
    """Each service's settings schema, as `python -m <module> --settings-schema` prints
    it, asked of every module at once in one child process (mesh.schema_probe); a
    service whose answer fails is left out, with a warning, and its settings stay
    free-form."""
    modules = sorted({spec.module for spec in config.services.values()})
    answers, problem = _probe_schemas(modules)
    schemas = {}
    for name, spec in config.services.items():
        answer = answers.get(spec.module, {"error": problem})
        if "schema" in answer:
            schemas[name] = answer["schema"]
        else:
            _warn(
                f"services.{name}.settings left free-form in the schema: "
                f"`python -m {spec.module} --settings-schema` {answer['error']}"
            )
    return schemas


def _probe_schemas(modules: Sequence[str]) -> tuple[dict[str, dict[str, Any]], str]:
    """mesh.schema_probe's answers for `modules`, and what went wrong if it gave none."""
    command = [sys.executable, "-m", "mesh.schema_probe", *modules]
    try:
        run = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_SCHEMA_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {}, f"gave no answer within {_SCHEMA_TIMEOUT:g}s"
    last = (run.stderr.strip().splitlines() or [""])[-1][:200]
    with contextlib.suppress(ValueError):
        answers = json.loads(run.stdout.splitlines()[-1]) if run.stdout.strip() else None
        if isinstance(answers, dict):
            return answers, ""
    return {}, f"exited with code {run.returncode}" + (f": {last}" if last else "")


def cmd_config_schema(config: MeshConfig | None, args: argparse.Namespace) -> int:
    schema = mesh_schema() if config is None else mesh_schema(_settings_schemas(config))
    print(json.dumps(schema, indent=2))
    return 0


def _write_schema(config: MeshConfig) -> None:
    """Write the schema for editors into the state folder; a failure only warns."""
    path = config.state_dir / SCHEMA_FILE
    schemas = _settings_schemas(config)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(mesh_schema(schemas), indent=2) + "\n")
        temporary.replace(path)  # an editor never reads half a file
    except OSError as error:
        _warn(f"cannot write {relative_path(path)}: {error.strerror}")
        return
    _say(f"schema        {relative_path(path)} (for editors; {len(schemas)} services' settings)")


# -- certs / generate -----------------------------------------------------------------


def cmd_certs(config: MeshConfig, args: argparse.Namespace) -> int:
    report = ensure_certificates(
        config.certs_dir, config.trust_domain, config.namespace, config.all_identities()
    )
    for status in report:
        name = (
            "ca"
            if status.name == "ca"
            else f"{status.name} (spiffe://{config.trust_domain}/ns/{config.namespace}/sa/{status.name})"
        )
        _say(f"{status.action:<8} {name}, valid until {status.not_after:%Y-%m-%d}")
    _say(f"in {relative_path(config.certs_dir)}/")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    layout = Layout(args.root.resolve())
    try:
        if args.stage_only:
            names = stage_third_party(layout)
            _say(f"staged {len(names)} third-party protos in {relative_path(layout.third_party)}/")
            return 0
        if args.check:
            stale = check(layout)
            if stale:
                listing = "\n  ".join(stale)
                return _fail(
                    f"generated/ is stale; run `make generate` and commit. Differs:\n  {listing}"
                )
            _say("generated/ matches protos/")
            return 0
        written = generate(layout)
    except CodegenError as error:
        return _fail(str(error))
    _say(f"wrote {len(written)} files to {relative_path(layout.generated)}/")
    return 0


# -- entry ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="mesh.yaml to use (default: $SHOPMESH_CONFIG, else ./mesh.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start etcd and every service instance")
    up.add_argument(
        "--detach", action="store_true", help="run in the background and return once ready"
    )
    up.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)"
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="once ready, run `meshctl demo` (make up does; make up DEMO=no does not)",
    )
    up.set_defaults(handler=cmd_up)

    demo = commands.add_parser(
        "demo",
        help="through the REST edge: sign up, browse, order (once declined), with trace ids",
    )
    demo.add_argument("--edge", default="edge", help="the edge's service name (default: edge)")
    demo.add_argument("--json", action="store_true", help="print the steps as JSON for scripts")
    demo.set_defaults(handler=cmd_demo)

    commands.add_parser("down", help="stop a mesh started with meshctl up").set_defaults(
        handler=cmd_down
    )

    status = commands.add_parser("status", help="list instances with their health")
    status.add_argument("--json", action="store_true", help="print a JSON list for scripts")
    status.set_defaults(handler=cmd_status)

    address = commands.add_parser(
        "address", help="print host:port of a serving instance of SERVICE (or instance ID)"
    )
    address.add_argument("service", help="a service, or an instance id such as product-v2-1")
    address.add_argument(
        "--envoy-admin",
        action="store_true",
        help="print the URL of its sidecar's Envoy admin instead",
    )
    address.add_argument(
        "--url",
        action="store_true",
        help="print the URL of its own HTTP listener instead (the edge's: curl $(...)/v1/products)",
    )
    address.set_defaults(handler=cmd_address)

    restart = commands.add_parser(
        "restart", help="restart SERVICE's instances one at a time, without failing a call"
    )
    restart.add_argument("service")
    restart.set_defaults(handler=cmd_restart)

    token = commands.add_parser(
        "token",
        help="print a bearer token for USER, from the REST edge (registering USER if needed)",
    )
    token.add_argument("user")
    token.add_argument(
        "--password",
        help="USER's password (default: the one meshctl chose when it registered USER)",
    )
    token.add_argument("--edge", default="edge", help="the edge's service name (default: edge)")
    token.set_defaults(handler=cmd_token)

    traffic = commands.add_parser(
        "traffic", help="show or set SERVICE's split of calls over its versions, live"
    )
    traffic.add_argument("service")
    split = traffic.add_mutually_exclusive_group()
    split.add_argument(
        "--weights", metavar="V=N,...", help="set the split, e.g. v1=90,v2=10 (whole numbers)"
    )
    split.add_argument("--switch", metavar="VERSION", help="blue-green: every call to VERSION")
    traffic.add_argument(
        "--timeout",
        type=float,
        default=CONFIRM_TIMEOUT,
        help=f"seconds to wait for every sidecar to apply it (default {CONFIRM_TIMEOUT:g})",
    )
    traffic.add_argument("--json", action="store_true", help="print JSON for scripts")
    traffic.set_defaults(handler=cmd_traffic)

    canary = commands.add_parser(
        "canary", help="move SERVICE's calls to VERSION step by step; roll back on errors"
    )
    canary.add_argument("service")
    canary.add_argument("version")
    canary.add_argument(
        "--steps",
        default="10,25,50,100",
        help="canary percentages, ending at 100 (default 10,25,50,100)",
    )
    canary.add_argument(
        "--interval", default="10s", help="time per step: 10s, 500ms, 1m or seconds (default 10s)"
    )
    canary.add_argument(
        "--max-error-rate",
        default="0.01",
        help="share of a method's calls that may fail (gRPC status not OK) (default 0.01)",
    )
    canary.set_defaults(handler=cmd_canary)

    policy = commands.add_parser(
        "policy", help="SERVICE's traffic policies and which data plane applies each"
    )
    policy.add_argument("service")
    policy.add_argument("--json", action="store_true", help="print JSON for scripts")
    policy.set_defaults(handler=cmd_policy)

    commands.add_parser(
        "apply", help="validate mesh.yaml and apply its authz table to the running mesh"
    ).set_defaults(handler=cmd_apply)

    fault = commands.add_parser(
        "fault",
        help="show, set or clear the faults SERVICE's instances inject into a method's calls",
    )
    fault.add_argument("service")
    fault.add_argument(
        "method", nargs="?", help="e.g. GetProduct or shop.product.v1.ProductService/GetProduct"
    )
    fault.add_argument(
        "--fail", type=float, metavar="PERCENT", help="share of calls that fail (0-100)"
    )
    fault.add_argument(
        "--status", metavar="CODE", help="gRPC status of a failed call (default UNAVAILABLE)"
    )
    fault.add_argument(
        "--delay", type=int, metavar="MS", help="milliseconds a delayed call waits first"
    )
    fault.add_argument(
        "--delay-percent",
        type=float,
        metavar="PERCENT",
        help="share of calls delayed (default 100 once --delay is given)",
    )
    fault.add_argument(
        "--clear",
        nargs="?",
        const=_EVERY_METHOD,
        metavar="METHOD",
        help="remove METHOD's live fault (every method's without one): mesh.yaml's holds",
    )
    fault.add_argument("--json", action="store_true", help="print JSON for scripts")
    fault.set_defaults(handler=cmd_fault)

    events = commands.add_parser(
        "events", help="print STREAM's events from the broker, oldest first, payloads as JSON"
    )
    events.add_argument("stream", help="e.g. user-usr-0123456789abcdef or order-<id>")
    events.add_argument("--topic", help="read only this topic (e.g. user): faster")
    events.add_argument("--limit", type=int, metavar="N", help="only the stream's N newest events")
    events.add_argument("--json", action="store_true", help="print one JSON array for scripts")
    events.set_defaults(handler=cmd_events)

    commands.add_parser(
        "certs", help="create the CA and certificates (keeps valid ones)"
    ).set_defaults(handler=cmd_certs)

    config = commands.add_parser("config", help="about mesh.yaml itself")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    schema = config_commands.add_parser(
        "schema", help="print the JSON Schema of mesh.yaml, each service's settings included"
    )
    schema.add_argument(
        "--runtime-only",
        action="store_true",
        help="only the runtime's part (services' settings free-form); runs no service module",
    )
    schema.set_defaults(handler=cmd_config_schema)

    gen = commands.add_parser("generate", help="regenerate generated/ from protos/")
    gen.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: .)")
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="fail if generated/ is stale; write nothing"
    )
    mode.add_argument(
        "--stage-only", action="store_true", help="only copy third-party protos for buf"
    )
    gen.set_defaults(handler=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "generate":
        return cmd_generate(args)
    if args.command == "config" and args.runtime_only:  # needs no mesh.yaml
        return cmd_config_schema(None, args)
    path = args.config or Path(os.environ.get("SHOPMESH_CONFIG", "mesh.yaml"))
    try:
        config = load_config(path)
        return int(args.handler(config, args))
    except ConfigError as error:
        return _fail(f"{path}: {error}", code=2)
    except MeshError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
