"""A mesh for tests: the repo's mesh.yaml with free ports, a test etcd and its own
key prefix, service instances as real processes, and clients as the admin identity.

Everything it starts is stopped by `aclose()`, which the fixtures call in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from mesh.client import DirectDataPlane, MeshClient
from mesh.config import ADMIN_IDENTITY, MeshConfig, load_config
from mesh.identity import IdentityFiles, SpiffeId, channel_credentials, ensure_certificates
from mesh.registry import EtcdClient, EtcdDiscovery, LivePolicy
from mesh.supervisor import ControlPlaneServer, InstanceProcess

REPO = Path(__file__).resolve().parents[2]


def write_config(
    root: Path,
    *,
    etcd_endpoint: str,
    certs_dir: Path,
    replicas: Mapping[str, int],
    overrides: Mapping[str, Any] | None = None,
    dataplane: str = "direct",
    events_endpoint: str | None = None,
) -> MeshConfig:
    """root/mesh.yaml: the repo's mesh.yaml with every port 0, a fresh registry prefix,
    short leases and drains, and only the services in `replicas` (each with its
    settings from the repo's file, so the demo data is there); with `events_endpoint`,
    the NATS broker there as its event bus (a mesh that runs inventory needs one:
    inventory learns products from product's events)."""
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())
    document["mesh"].update(
        state_dir=str(root / ".mesh"), certs_dir=str(certs_dir), dataplane=dataplane
    )
    document["controlplane"] = {"port": 0}
    document["etcd"] = {
        "endpoint": etcd_endpoint,
        "prefix": f"/test-{uuid.uuid4().hex[:8]}",
        "lease_ttl": 2,
    }
    document["server"] = {"drain_delay": 0.5, "grace_period": 5.0}
    if events_endpoint is not None:
        document["events"] = {"broker": "nats", "endpoint": events_endpoint}
    repo_services = document["services"]
    document["services"] = {
        name: _test_service(repo_services.get(name, {}), count) for name, count in replicas.items()
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            document.setdefault(section, {}).update(values)
        else:
            document[section] = values
    root.mkdir(parents=True, exist_ok=True)
    (root / "mesh.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    config = load_config(root / "mesh.yaml")
    ensure_certificates(certs_dir, config.trust_domain, config.namespace, config.all_identities())
    return config


def _test_service(repo: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """A service of the repo's mesh.yaml on any free ports, its settings' too."""
    settings = dict(repo.get("settings", {}))
    if "http_port" in settings:
        settings["http_port"] = 0
    service = {"replicas": replicas, "port": 0, "metrics_port": 0, "settings": settings}
    if "module" in repo:
        service["module"] = repo["module"]
    return service


class MeshHarness:
    """Instances of a test mesh, started and stopped as real processes."""

    def __init__(self, config: MeshConfig, etcd_endpoint: str) -> None:
        self.config = config
        self.etcd_endpoint = etcd_endpoint
        self.etcd = EtcdClient(etcd_endpoint)
        self.instances: dict[str, InstanceProcess] = {}
        self.controlplane: ControlPlaneServer | None = None
        self._clients: list[MeshClient] = []
        self._live: list[LivePolicy] = []

    async def start_controlplane(self) -> ControlPlaneServer:
        """The xDS control plane, which instances with sidecars need (started once)."""
        if self.controlplane is None:
            self.controlplane = ControlPlaneServer(
                self.config,
                self.etcd_endpoint,
                self.config.state_dir / "logs" / "controlplane.log",
            )
            await self.controlplane.spawn()
            await self.controlplane.wait_healthy()
        return self.controlplane

    async def start(self, replicas: Mapping[str, int] | None = None) -> None:
        """Start instances (default: as many as mesh.yaml says) and wait until all serve;
        with sidecars, the control plane first. With product and inventory both among
        them, also until inventory has stocked the demo products (`until_stocked`)."""
        if self.config.dataplane == "sidecar":
            await self.start_controlplane()
        wanted = replicas or {name: spec.replicas for name, spec in self.config.services.items()}
        started = [
            self.spawn(service, f"{service}-{index + 1}")
            for service, count in wanted.items()
            for index in range(count)
        ]
        await asyncio.gather(*(instance.start() for instance in started))
        await asyncio.gather(*(instance.wait_ready(self.etcd) for instance in started))
        if wanted.get("product") and wanted.get("inventory"):
            await self.until_stocked()

    async def until_stocked(self, timeout: float = 20.0) -> None:
        """Wait until inventory has learnt, from product's events, of every demo product
        it has opening stock for, which it stocks as it learns each one. (An instance
        serves once caught up with what the broker holds, but product may still be
        publishing its demo products then.)"""
        opening = self.config.service("inventory").settings.get("opening_stock", {})
        demo = self.config.service("product").settings.get("demo_products", [])
        expected = [d["product_id"] for d in demo if opening.get(d["product_id"], 0) > 0]
        stub = inventory_pb2_grpc.InventoryServiceStub(self.client().channel("inventory"))  # type: ignore[no-untyped-call]
        until = asyncio.get_running_loop().time() + timeout
        for product_id in expected:
            while True:
                response = await stub.GetStock(
                    inventory_pb2.GetStockRequest(product_id=product_id), timeout=5
                )
                if response.stock.on_hand > 0:
                    break
                if asyncio.get_running_loop().time() > until:
                    raise AssertionError(
                        f"inventory has not stocked {product_id} within {timeout:.0f}s: is the"
                        f" broker in the test's config (write_config's events_endpoint)?\n"
                        f"{self.logs()}"
                    )
                await asyncio.sleep(0.05)

    def spawn(
        self, service: str, instance_id: str, *, version: str | None = None
    ) -> InstanceProcess:
        instance = InstanceProcess(
            self.config,
            self.config.service(service),
            instance_id,
            self.etcd_endpoint,
            version=version,
        )
        self.instances[instance_id] = instance
        return instance

    async def start_one(self, service: str, instance_id: str) -> InstanceProcess:
        instance = self.spawn(service, instance_id)
        await instance.start()
        await instance.wait_ready(self.etcd)
        return instance

    def client(
        self, identity: str = ADMIN_IDENTITY, *, live: LivePolicy | None = None, **policy: Any
    ) -> MeshClient:
        """A mesh client with `identity`'s certificate; `policy` overrides ClientPolicy
        fields (for every service: no service's own `policy:` applies). With `live`
        (from `live_policy()`), calls split over versions by its live weights, as in an
        instance (declared `policy.weights` do not apply here); without, every endpoint
        gets an equal share."""
        from dataclasses import replace

        client = MeshClient(
            DirectDataPlane(
                EtcdDiscovery(self.etcd, self.config.etcd.prefix),
                channel_credentials(IdentityFiles(self.config.certs_dir, identity)),
                replace(self.config.client, **policy),
                identity_of=functools.partial(
                    SpiffeId, self.config.trust_domain, self.config.namespace
                ),
                weights=(lambda service: live.weights.get(service)) if live else None,
            )
        )
        self._clients.append(client)
        return client

    def live_policy(self) -> LivePolicy:
        """A started LivePolicy on this mesh's etcd prefix (stopped by `aclose()`): the
        live authz table and version weights, as instances follow them."""
        live = LivePolicy(self.etcd, self.config.etcd.prefix, self.config.authz)
        live.start()
        self._live.append(live)
        return live

    def logs(self) -> str:
        return "\n".join(f"--- {i.instance_id}\n{i.log_tail()}" for i in self.instances.values())

    async def aclose(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        for live in self._live:
            await live.aclose()
        await asyncio.gather(*(i.stop() for i in self.instances.values()), return_exceptions=True)
        if self.controlplane is not None:
            await self.controlplane.stop()
        await self.etcd.aclose()
