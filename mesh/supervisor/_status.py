"""What is running: every instance registered in etcd, plus every instance meshctl
started that is not (yet, or any more) registered, each with its live health."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

from mesh.config import MeshConfig
from mesh.registry import Endpoint, EtcdClient, services_root
from mesh.state import MeshState, process_running
from mesh.supervisor._health import check_health

__all__ = ["InstanceStatus", "mesh_status"]


@dataclass(frozen=True)
class InstanceStatus:
    """One row of `meshctl status`; `to_json()` is the `--json` object (a public interface:
    fields are only ever added)."""

    service: str
    id: str
    address: str  # host:port to dial; "" if the instance never registered
    version: str
    health: str  # SERVING, NOT_SERVING, UNREACHABLE, STARTING (not registered yet) or DOWN
    metrics: str  # http URL of /metrics, or ""
    pid: int | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


async def mesh_status(
    config: MeshConfig, etcd: EtcdClient, state: MeshState | None
) -> list[InstanceStatus]:
    """Rows sorted by service and instance id. Raises RegistryUnavailable if etcd is down."""
    _, items = await etcd.get_prefix(services_root(config.etcd.prefix))
    endpoints: list[Endpoint] = []
    for _, value in items:
        try:
            endpoints.append(Endpoint.from_json(value))
        except ValueError:
            continue
    healths = await asyncio.gather(*(check_health(config, e.address) for e in endpoints))
    rows = {
        e.instance_id: InstanceStatus(
            service=e.service,
            id=e.instance_id,
            address=e.address,
            version=e.version,
            health=health,
            metrics=f"http://{e.metadata['metrics']}/metrics" if "metrics" in e.metadata else "",
            pid=int(e.metadata["pid"]) if e.metadata.get("pid", "").isdigit() else None,
        )
        for e, health in zip(endpoints, healths, strict=True)
    }
    for record in state.instances if state else ():
        if record.instance_id not in rows:
            alive = process_running(record.pid, (record.instance_id,))
            rows[record.instance_id] = InstanceStatus(
                service=record.service,
                id=record.instance_id,
                address="",
                version=config.services[record.service].version
                if record.service in config.services
                else "",
                health="STARTING" if alive else "DOWN",
                metrics="",
                pid=record.pid,
            )
    return sorted(rows.values(), key=lambda row: (row.service, row.id))
