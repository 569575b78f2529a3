"""What is running: every instance registered in etcd, plus every instance meshctl
started that is not (yet, or any more) registered, each with its live health and the
supervisor's count of its restarts. Without etcd, the supervisor's records alone, each
checked at the address it last served on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from mesh.config import MeshConfig
from mesh.registry import Endpoint, EtcdClient, services_root, xds_status_root
from mesh.state import InstanceRecord, MeshState, process_running
from mesh.supervisor._health import check_health
from mesh.supervisor._restart import CRASHLOOP, RESTARTING

__all__ = ["InstanceStatus", "mesh_status", "supervisor_status"]

STARTING, DOWN = "STARTING", "DOWN"


@dataclass(frozen=True)
class InstanceStatus:
    """One row of `meshctl status`; `to_json()` is the `--json` object (a public interface:
    fields are only ever added)."""

    service: str
    id: str
    address: str  # host:port to dial; "" if the instance is not serving (or never was)
    version: str
    # SERVING, NOT_SERVING, UNREACHABLE, or the gRPC code name of a failed check, as the
    # instance answers; else STARTING (not registered yet), RESTARTING or CRASHLOOP
    # (waiting to be restarted after a crash; repeated crashes), or DOWN
    health: str
    metrics: str  # http URL of /metrics, or ""
    pid: int | None
    restarts: int = 0  # times the supervisor restarted it after it died
    dataplane: str = ""  # "direct" or "sidecar": how it is reached
    envoy_admin: str = ""  # host:port of its sidecar's Envoy admin; "" without one
    xds_nacks: dict[str, str] = field(default_factory=dict)
    """Its sidecar's config the control plane last saw refused, by resource type:
    Envoy's own error text. Empty when everything pushed was accepted."""
    url: str = ""
    """The URL of the instance's own HTTP listener, as it registered it (the edge's
    http://host:port); "" for an instance without one."""

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
    rows = await _rows(config, state, endpoints)
    nacks = await _xds_nacks(config, etcd)
    return [replace(row, xds_nacks=nacks[row.id]) if row.id in nacks else row for row in rows]


async def _xds_nacks(config: MeshConfig, etcd: EtcdClient) -> Mapping[str, dict[str, str]]:
    """The NACKs the control plane keeps in etcd, by instance id."""
    root = xds_status_root(config.etcd.prefix)
    _, items = await etcd.get_prefix(root)
    found = {}
    for key, value in items:
        try:
            nacks = json.loads(value)["nacks"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(nacks, dict):
            found[key.removeprefix(root)] = {str(k): str(v) for k, v in nacks.items()}
    return found


async def supervisor_status(config: MeshConfig, state: MeshState) -> list[InstanceStatus]:
    """Rows as `mesh_status` gives them, without etcd: what the supervisor recorded,
    with a health check of each instance at the address it serves on."""
    return await _rows(config, state, [])


async def _rows(
    config: MeshConfig, state: MeshState | None, endpoints: list[Endpoint]
) -> list[InstanceStatus]:
    records = {r.instance_id: r for r in state.instances} if state else {}
    registered = {e.instance_id: e for e in endpoints}
    rows = await asyncio.gather(
        *(_recorded(config, record, registered.get(id_)) for id_, record in records.items()),
        *(_registered(config, e) for id_, e in registered.items() if id_ not in records),
    )
    return sorted(rows, key=lambda row: (row.service, row.id))


async def _registered(config: MeshConfig, endpoint: Endpoint) -> InstanceStatus:
    """An instance that meshctl did not start (one started by hand, say)."""
    pid = endpoint.metadata.get("pid", "")
    return InstanceStatus(
        service=endpoint.service,
        id=endpoint.instance_id,
        address=endpoint.address,
        version=endpoint.version,
        health=await check_health(config, endpoint.address),
        metrics=_metrics_url(endpoint),
        pid=int(pid) if pid.isdigit() else None,
        dataplane=endpoint.metadata.get("dataplane", "direct"),
        envoy_admin=endpoint.metadata.get("envoy_admin", ""),
        url=endpoint.metadata.get("url", ""),
    )


async def _recorded(
    config: MeshConfig, record: InstanceRecord, endpoint: Endpoint | None
) -> InstanceStatus:
    """An instance the supervisor runs, registered as `endpoint` (if at all)."""
    if endpoint is not None and endpoint.metadata.get("pid", str(record.pid)) != str(record.pid):
        endpoint = None  # left by its previous process, whose lease has not expired yet
    address = endpoint.address if endpoint else record.address
    running = record.pid is not None and process_running(record.pid, (record.instance_id,))
    if record.state in (RESTARTING, CRASHLOOP):
        health = record.state
    elif not running:
        health = DOWN
    else:
        health = await check_health(config, address) if address else STARTING
    fallback = config.services[record.service].version if record.service in config.services else ""
    return InstanceStatus(
        service=record.service,
        id=record.instance_id,
        address=address,
        version=endpoint.version if endpoint else record.version or fallback,
        health=health,
        metrics=_metrics_url(endpoint) if endpoint else record.metrics,
        pid=record.pid if running else None,
        restarts=record.restarts,
        dataplane=record.dataplane or config.dataplane,
        envoy_admin=(endpoint.metadata.get("envoy_admin", "") if endpoint else record.envoy_admin),
        url=endpoint.metadata.get("url", "") if endpoint else "",
    )


def _metrics_url(endpoint: Endpoint) -> str:
    metrics = endpoint.metadata.get("metrics")
    return f"http://{metrics}/metrics" if metrics else ""
