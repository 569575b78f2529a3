"""What a running `meshctl up` leaves in <state_dir>/state.json: the supervisor's pid,
the etcd it uses and the instances it started, for other meshctl commands and for an
instance started by hand (which finds etcd there)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["InstanceRecord", "MeshState", "clear_state", "read_state", "write_state"]

STATE_FILE = "state.json"


@dataclass(frozen=True)
class InstanceRecord:
    service: str
    instance_id: str
    pid: int
    port: int
    metrics_port: int
    log: str


@dataclass(frozen=True)
class MeshState:
    supervisor_pid: int
    etcd_endpoint: str
    etcd_pid: int | None  # None when the mesh uses an etcd it did not start
    ready: bool = False
    instances: tuple[InstanceRecord, ...] = field(default_factory=tuple)

    def supervisor_alive(self) -> bool:
        try:
            os.kill(self.supervisor_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def write_state(state_dir: Path, state: MeshState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(state_dir / STATE_FILE)


def read_state(state_dir: Path) -> MeshState | None:
    """The state of the mesh started from `state_dir`, or None if there is none."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        instances = tuple(InstanceRecord(**item) for item in data.pop("instances", []))
        return MeshState(**data, instances=instances)
    except (OSError, ValueError, TypeError):
        return None


def clear_state(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)
