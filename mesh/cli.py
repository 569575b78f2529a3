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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.codegen import CodegenError, Layout, check, generate, stage_third_party
from mesh.config import ADMIN_IDENTITY, MeshConfig, load_config, mesh_schema
from mesh.errors import ConfigError, MeshError, RegistryUnavailable
from mesh.identity import ensure_certificates
from mesh.registry import EtcdClient
from mesh.state import SUPERVISOR_MARKERS, etcd_endpoint, process_running
from mesh.supervisor import (
    ControlRequest,
    InstanceStatus,
    MeshAlreadyRunning,
    MeshState,
    ProtocolError,
    Supervisor,
    clear_state,
    log_tail,
    mesh_status,
    read_state,
    relative_path,
    send_command,
    supervisor_status,
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
    try:
        async with EtcdClient(endpoint, timeout=2.0) as etcd:
            return _Status(await mesh_status(config, etcd, state), state, endpoint, True)
    except RegistryUnavailable as error:
        if state is None:
            raise
        # The supervisor knows its instances: check them where they serve.
        _warn(f"etcd is unreachable ({error}); showing what the supervisor knows")
        return _Status(await supervisor_status(config, state), state, endpoint, False)


def _warn(message: str) -> None:
    print(f"meshctl: {message}", file=sys.stderr, flush=True)


def _table(rows: Sequence[InstanceStatus]) -> str:
    header = ("SERVICE", "ID", "ADDRESS", "VERSION", "HEALTH", "METRICS", "PID", "RESTARTS")
    cells = [header] + [
        (
            r.service,
            r.id,
            r.address or "-",
            r.version,
            r.health,
            r.metrics or "-",
            str(r.pid or "-"),
            str(r.restarts),
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


def _report(status: _Status) -> str:
    table = _table(status.rows) if status.rows else "no instances registered"
    return f"{table}\n\n{_etcd_line(status)}"


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
    return "\n".join(
        [
            f"Call any service with grpcurl as the {ADMIN_IDENTITY} identity, for example:",
            f"  grpcurl {tls} {first} list",
            *(
                f"  grpcurl {tls} {a} grpc.health.v1.Health/Check   # {s}"
                for s, a in sorted(serving.items())
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
        if row.service == args.service and row.health == "SERVING":
            print(row.address)
            return 0
    return _fail(f"no instance of {args.service!r} is serving")


# -- up / down ------------------------------------------------------------------------


def cmd_up(config: MeshConfig, args: argparse.Namespace) -> int:
    if args.detach:
        return _up_detached(config, args)
    return asyncio.run(_up_foreground(config, args.timeout))


async def _up_foreground(config: MeshConfig, timeout: float) -> int:
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


# -- config schema --------------------------------------------------------------------

SCHEMA_FILE = "mesh.schema.json"
"""In the state folder: the schema `meshctl up` writes for editors (see mesh.yaml)."""

_SCHEMA_TIMEOUT = 60.0
"""Seconds a service's `--settings-schema` run may take: it imports the service."""


def _settings_schemas(config: MeshConfig) -> dict[str, dict[str, Any]]:
    """Each service's settings schema, printed by `python -m <module> --settings-schema`
    (run for every service at once); a service whose run fails is left out, with a
    warning, and its settings stay free-form."""
    runs = {name: _ask_settings_schema(spec.module) for name, spec in config.services.items()}
    schemas = {}
    try:
        for name, run in runs.items():
            schema, problem = _printed_schema(run)
            if schema is None:
                module = config.services[name].module
                _warn(
                    f"services.{name}.settings left free-form in the schema: "
                    f"`python -m {module} --settings-schema` {problem}"
                )
            else:
                schemas[name] = schema
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
    return schemas


def _ask_settings_schema(module: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", module, "--settings-schema"]
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _printed_schema(run: subprocess.Popen[str]) -> tuple[dict[str, Any] | None, str]:
    """The JSON object `run` printed, or None and what went wrong."""
    try:
        out, err = run.communicate(timeout=_SCHEMA_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"gave no answer within {_SCHEMA_TIMEOUT:g}s"
    if run.returncode != 0:
        last = (err.strip().splitlines() or [""])[-1][:200]
        return None, f"exited with code {run.returncode}" + (f": {last}" if last else "")
    with contextlib.suppress(ValueError):
        schema = json.loads(out)
        if isinstance(schema, dict):
            return schema, ""
    return None, "printed no JSON object"


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
    up.set_defaults(handler=cmd_up)

    commands.add_parser("down", help="stop a mesh started with meshctl up").set_defaults(
        handler=cmd_down
    )

    status = commands.add_parser("status", help="list instances with their health")
    status.add_argument("--json", action="store_true", help="print a JSON list for scripts")
    status.set_defaults(handler=cmd_status)

    address = commands.add_parser(
        "address", help="print host:port of a serving instance of SERVICE"
    )
    address.add_argument("service")
    address.set_defaults(handler=cmd_address)

    restart = commands.add_parser(
        "restart", help="restart SERVICE's instances one at a time, without failing a call"
    )
    restart.add_argument("service")
    restart.set_defaults(handler=cmd_restart)

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
