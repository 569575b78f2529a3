"""What a running `meshctl up` leaves in <state_dir>/state.json: the supervisor's pid,
its control socket, the etcd and event broker it uses and the instances it started, each with its
current pid, state and restarts, for other meshctl commands and for an instance started
by hand (which finds etcd and the broker there).

The supervisor rewrites the file atomically on every change (a restart changes pids).
`read_state` accepts files written by older and newer versions: a missing field gets its
default and an unknown one is ignored."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mesh.config import MeshConfig

__all__ = [
    "InstanceRecord",
    "MeshState",
    "clear_state",
    "etcd_endpoint",
    "events_endpoint",
    "process_running",
    "read_state",
    "write_state",
]

STATE_FILE = "state.json"


@dataclass(frozen=True)
class InstanceRecord:
    """One instance the supervisor runs, as it last saw it."""

    service: str
    instance_id: str
    pid: int | None  # its current process; None while it waits to be restarted
    port: int  # as configured (0: any free port)
    metrics_port: int
    log: str
    address: str = ""  # host:port it serves on, once SERVING; "" before
    metrics: str = ""  # URL of its /metrics, once SERVING
    version: str = ""
    restarts: int = 0  # restarts after the process died (never a rolling restart)
    state: str = "STARTING"  # STARTING, SERVING, RESTARTING or CRASHLOOP
    dataplane: str = ""  # "direct" or "sidecar"
    envoy_admin: str = ""  # host:port of its sidecar's Envoy admin, once SERVING; "" if none


@dataclass(frozen=True)
class MeshState:
    supervisor_pid: int
    etcd_endpoint: str
    etcd_pid: int | None  # None when the mesh uses an etcd it did not start
    ready: bool = False
    instances: tuple[InstanceRecord, ...] = field(default_factory=tuple)
    etcd_state: str = ""  # the embedded etcd: RUNNING, RESTARTING or CRASHLOOP; "" if external
    etcd_restarts: int = 0
    control: str = ""  # path of the supervisor's control socket; "" if it has none
    controlplane: str = ""  # host:port of the xDS control plane; "" without sidecars
    controlplane_pid: int | None = None
    controlplane_state: str = ""  # RUNNING, RESTARTING or CRASHLOOP; "" without sidecars
    controlplane_restarts: int = 0
    events_endpoint: str = ""  # host:port of the event broker; "" if none is known
    events_pid: int | None = None  # None when the mesh uses a broker it did not start
    events_state: str = ""  # the embedded broker: RUNNING, RESTARTING or CRASHLOOP; "" if external
    events_restarts: int = 0

    def supervisor_alive(self) -> bool:
        """Whether the supervisor still runs (not merely whether its pid is taken: after
        a crash or a reboot the pid may belong to another program)."""
        return process_running(self.supervisor_pid, SUPERVISOR_MARKERS)


SUPERVISOR_MARKERS = ("meshctl", "mesh.cli")
"""What the command line of a supervisor contains: `meshctl up`, or `python -m
mesh.cli ... up` for a detached one."""


def process_running(pid: int, markers: tuple[str, ...] = ()) -> bool:
    """Whether `pid` is a live process (not a zombie) whose command line contains one of
    `markers` (any process, if none are given). Without /proc, only the pid is checked."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = (
            proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return False
    return not markers or any(marker in cmdline for marker in markers)


def etcd_endpoint(config: MeshConfig) -> str | None:
    """The etcd this mesh uses: the one mesh.yaml names, else the one `meshctl up`
    started from this folder, else None."""
    if config.etcd.endpoint:
        return config.etcd.endpoint
    state = read_state(config.state_dir)
    return state.etcd_endpoint if state is not None else None


def events_endpoint(config: MeshConfig) -> str | None:
    """The event broker this mesh uses: the one mesh.yaml names, else the one `meshctl
    up` started from this folder, else None. (The supervisor first writes state.json
    once it has spawned every instance: an instance finds the broker there from then.)"""
    if config.events.endpoint:
        return config.events.endpoint
    state = read_state(config.state_dir)
    return (state.events_endpoint or None) if state is not None else None


def write_state(state_dir: Path, state: MeshState) -> None:
    """Replace the state file at once: a reader sees the old file or the new, never half."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(state_dir / STATE_FILE)


def read_state(state_dir: Path) -> MeshState | None:
    """The state of the mesh started from `state_dir`, or None if there is none."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        instances = tuple(
            InstanceRecord(**_known(InstanceRecord, item)) for item in data.pop("instances", [])
        )
        return MeshState(**_known(MeshState, data), instances=instances)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _known(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the keys that are no field of dataclass `cls` (a newer version's)."""
    names = {f.name for f in fields(cls)} - {"instances"}
    return {key: value for key, value in data.items() if key in names}


def clear_state(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)
