"""The sidecar data plane's subjects: a product instance behind its own Envoy, a
caller's Envoy in front of it, and a few more Envoys for the registry-to-sidecars
measurement, all fed by the mesh's real control plane (`python -m mesh.xds`).

Its mesh.yaml is the repo's with `dataplane: sidecar`, the services product, order
and inventory, its own etcd prefix (so the proxyless instances, registered under the
main one, are not in its clusters) and one more authz rule, for the benchmark only:
order may call GetProduct (the caller's sidecar presents order's certificate, and the
repo's table lets order call only BatchGetProducts).

The path under load: load process -> the caller's Envoy (order-1's sidecar, through
its outbound Unix socket, with `product` as :authority and the idempotency header, as
the app's SidecarDataPlane sends them) -> mTLS -> product-3's Envoy (RBAC, rate
limit, faults, gRPC stats) -> product-3's app on its Unix socket. The caller's Envoy
is an Envoy on a bootstrap of mesh.envoy for an order node, as an order instance's
sidecar runs it, with no app behind it: the load processes are its app.

Where they run: product-3's app and its Envoy (which the app starts, so it inherits
the app's core) on the server core, like every server; the caller's Envoy, like the
load processes it serves as their sidecar, and the control plane, like etcd, on the
load core. So each sidecar shares the core of its own app, as in a pod.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu, placement
from bench.aio import to_completion
from bench.load import LoadFailed, Target
from bench.propagation import AdminConnection, shows_host
from bench.shopmesh import GET_PRODUCT, MeshEnvironment, ProductInstance, product_instance
from bench.sidecar_variants import SCHED_BATCH, UNPINNED, XDS_VARIANTS, batch_threads
from mesh.client import is_idempotent
from mesh.config import CONTROLPLANE_IDENTITY, MeshConfig
from mesh.envoy import IDEMPOTENT_HEADER, SidecarNode, bootstrap, cluster_name, runtime_defaults
from mesh.identity import IdentityFiles, SpiffeId, ensure_certificates
from mesh.process import free_port
from mesh.server import EnvoyProcess, SidecarSockets
from mesh.supervisor import ControlPlaneServer

__all__ = [
    "CALLER_ID",
    "FAKE_SERVICE",
    "INSTANCE_ID",
    "PREFIX",
    "Envoy",
    "SidecarPath",
    "extra_sidecars",
    "inbound_envoy",
    "sidecar_document",
    "sidecar_path",
    "wait_listed",
]

Report = Callable[[str], None]

PREFIX = "/bench-sidecar"
SERVICES = ("product", "order", "inventory")
CALLER_SERVICE = "order"
CALLER_ID = "order-1"
INSTANCE_ID = "product-3"
FAKE_SERVICE = "inventory"  # no instances: the registry test adds and removes fakes
BENCH_RULE = {"callers": [CALLER_SERVICE], "methods": ["shop.product.v1.ProductService/GetProduct"]}
ROUTE_TIMEOUT = 10.0  # seconds for the caller's sidecar to list product-3


def sidecar_document(document: dict[str, Any]) -> None:
    """The edits of the sidecar mesh's mesh.yaml (see the module's docstring)."""
    document["mesh"]["dataplane"] = "sidecar"
    document["etcd"]["prefix"] = PREFIX
    document["controlplane"] = {"port": 0}
    document["authz"] = [*document["authz"], BENCH_RULE]


@dataclass(frozen=True)
class Envoy:
    """A running sidecar Envoy."""

    label: str
    pid: int
    admin: str  # host:port


@dataclass(frozen=True)
class SidecarPath:
    config: MeshConfig
    controlplane: ControlPlaneServer
    product: ProductInstance
    inbound: Envoy  # product-3's sidecar
    caller: Envoy  # order-1's sidecar
    outbound_socket: str  # the caller's sidecar's, which the load calls

    @property
    def controlplane_pid(self) -> int:
        assert self.controlplane.pid is not None, "not started"
        return self.controlplane.pid

    def target(self, request: bytes) -> Target:
        """GetProduct through both sidecars, as order-1's app would call it."""
        idempotent = ((IDEMPOTENT_HEADER, "1"),) if is_idempotent(GET_PRODUCT) else ()
        return Target(
            f"unix:{self.outbound_socket}",
            GET_PRODUCT,
            request,
            authority=self.product.endpoint.service,
            metadata=idempotent,
        )


def _node(config: MeshConfig, service: str, node_id: str) -> SidecarNode:
    """A sidecar node of `service` as mesh.server's Sidecar describes an instance's,
    with its sockets in the mesh's run folder (no app listens on the app socket)."""
    sockets = SidecarSockets.of(config, node_id)
    identity = IdentityFiles(config.certs_dir, service)
    return SidecarNode(
        node_id=node_id,
        service=service,
        version="v1",
        inbound_host=config.host,
        inbound_port=free_port(config.host),
        app_socket=sockets.app,
        outbound_socket=sockets.outbound,
        cert_chain=str(identity.cert.resolve()),
        private_key=str(identity.key.resolve()),
        ca=str(identity.ca.resolve()),
    )


@asynccontextmanager
async def _sidecar_envoy(
    config: MeshConfig,
    controlplane: ControlPlaneServer,
    service: str,
    node_id: str,
    cpus: frozenset[int] | None = None,
) -> AsyncIterator[tuple[Envoy, SidecarNode]]:
    """An Envoy for a node of `service`, ready (its first xDS fetch done), on `cpus`
    (None: the calling thread's); stopped on exit."""
    node = _node(config, service, node_id)
    document = bootstrap(
        node,
        xds_host=config.host,
        xds_port=controlplane.port,
        controlplane_spiffe=SpiffeId(
            config.trust_domain, config.namespace, CONTROLPLANE_IDENTITY
        ).uri,
        admin_host=config.host,
        runtime=runtime_defaults(config.service(service)),
    )
    process = EnvoyProcess(
        document,
        workdir=config.state_dir / "run",
        log_path=config.state_dir / "logs" / f"{node_id}.envoy.log",
        name=f"{node_id}.envoy",
    )
    try:
        with placement.launching_on(cpus):
            await process.start()
        admin = await process.wait_ready(30.0)
        assert process.pid is not None
        yield Envoy(f"{node_id}.envoy", process.pid, admin), node
    finally:
        await to_completion(process.stop())


class _VariantControlPlane(ControlPlaneServer):
    """The control plane serving resources edited by bench.sidecar_variants."""

    def __init__(
        self, config: MeshConfig, etcd_endpoint: str, log_path: Path, variants: Sequence[str]
    ) -> None:
        super().__init__(config, etcd_endpoint, log_path)
        self._variants = ",".join(variants)

    def entrypoint(self) -> list[str]:
        return [sys.executable, "-m", "bench.sidecar_variants", self._variants]


@asynccontextmanager
async def _controlplane(
    config: MeshConfig, etcd_endpoint: str, variants: Sequence[str] = ()
) -> AsyncIterator[ControlPlaneServer]:
    log_path = config.state_dir / "logs" / "controlplane.log"
    xds_variants = [name for name in variants if name in XDS_VARIANTS]
    server = (
        _VariantControlPlane(config, etcd_endpoint, log_path, xds_variants)
        if xds_variants
        else ControlPlaneServer(config, etcd_endpoint, log_path)
    )
    try:
        await server.spawn()
        await server.wait_healthy()
        yield server
    finally:
        await to_completion(server.stop())


def inbound_envoy(product: ProductInstance) -> Envoy:
    """The Envoy product-3's app started as its sidecar (its child process)."""
    pids = cpu.children_named(product.pid, "envoy")
    if len(pids) != 1:
        raise LoadFailed(f"{product.instance_id} has {len(pids)} envoy children, not 1")
    return Envoy(f"{product.instance_id}.envoy", pids[0], product.endpoint.metadata["envoy_admin"])


async def wait_listed(admin: str, cluster: str, address: str, timeout: float) -> None:
    """Until `admin`'s /clusters lists `address` in `cluster`."""
    async with AdminConnection(admin) as connection:
        async with asyncio.timeout(timeout):
            while True:
                if shows_host(await connection.get("/clusters"), cluster, address):
                    return
                await asyncio.sleep(0.01)


@asynccontextmanager
async def sidecar_path(
    env: MeshEnvironment,
    server_cpus: frozenset[int] | None,
    report: Report,
    variants: Sequence[str] = (),
) -> AsyncIterator[SidecarPath]:
    """The control plane, product-3 with its sidecar (on `server_cpus`) and order-1's
    sidecar (on the calling thread's cores); all stopped on exit. `variants`: the
    experiments of bench.sidecar_variants (none: the mesh as it is)."""
    config = env.custom("sidecar", services=SERVICES, edit=sidecar_document)
    # The same CA: the services the main mesh.yaml lacks get their certificates.
    ensure_certificates(
        config.certs_dir, config.trust_domain, config.namespace, config.all_identities()
    )
    async with AsyncExitStack() as stack:
        controlplane = await stack.enter_async_context(
            _controlplane(config, env.etcd.endpoint, variants)
        )
        product = await stack.enter_async_context(
            product_instance(env, config, INSTANCE_ID, lambda: placement.launching_on(server_cpus))
        )
        inbound = inbound_envoy(product)
        caller, node = await stack.enter_async_context(
            _sidecar_envoy(config, controlplane, CALLER_SERVICE, CALLER_ID)
        )
        product_cluster = cluster_name(product.endpoint.service, product.endpoint.version)
        await wait_listed(caller.admin, product_cluster, product.address, ROUTE_TIMEOUT)
        if UNPINNED in variants:
            every_core = frozenset(os.sched_getaffinity(0)) | frozenset(server_cpus or ())
            for envoy in (inbound, caller):
                placement.pin_threads(envoy.pid, every_core)
        if SCHED_BATCH in variants:
            for envoy in (inbound, caller):
                batch_threads(envoy.pid)
        report(
            f"  sidecar path: control plane {controlplane.endpoint} (pid {controlplane.pid}); "
            f"{INSTANCE_ID} app (pid {product.pid}) behind its Envoy {product.address} "
            f"(pid {inbound.pid}, admin {inbound.admin}); {CALLER_ID}'s Envoy (pid "
            f"{caller.pid}, admin {caller.admin}) on {node.outbound_socket}"
        )
        yield SidecarPath(config, controlplane, product, inbound, caller, node.outbound_socket)


@asynccontextmanager
async def extra_sidecars(
    path: SidecarPath, count: int, cpus: frozenset[int] | None
) -> AsyncIterator[list[Envoy]]:
    """`count` more Envoys, as sidecars of order instances with no app, started
    together on `cpus`; stopped on exit."""
    async with AsyncExitStack() as stack:
        started = await asyncio.gather(
            *(
                stack.enter_async_context(
                    _sidecar_envoy(
                        path.config, path.controlplane, CALLER_SERVICE, f"order-{i + 2}", cpus
                    )
                )
                for i in range(count)
            )
        )
        yield [envoy for envoy, _ in started]
