"""The control plane process (`python -m mesh.xds`): one ADS server for every sidecar,
fed by etcd (MeshWatcher) and translated by mesh.envoy's generators.

It serves over mTLS as the `controlplane` identity and answers only workload
certificates of this mesh. It registers its address in etcd under a lease, where
instances find it for their sidecars' bootstraps, and it keeps each sidecar's last
NACK (Envoy's own error text) in etcd, where `meshctl status` shows it. Killed, it
leaves every Envoy running on its last config; restarted on the same port, every
Envoy reconnects and gets the current config.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc

from mesh.config import CONTROLPLANE_IDENTITY, MeshConfig, load_config
from mesh.envoy import SidecarNode, resources
from mesh.errors import MeshError
from mesh.identity import IdentityFiles, SpiffeId, server_credentials
from mesh.registry import (
    Endpoint,
    EtcdClient,
    Registration,
    controlplane_key,
    xds_status_root,
)
from mesh.state import etcd_endpoint
from mesh.tasks import start_background
from mesh.telemetry import configure_logging
from mesh.xds._serving import AdsServer
from mesh.xds._state import MeshWatcher

__all__ = ["main", "serve_controlplane"]

log = logging.getLogger("mesh.xds")


class _NackBook:
    """Each sidecar's last NACK, mirrored into etcd under the control plane's lease
    (so it goes with the control plane) and cleared by the next ACK of that type."""

    def __init__(self, etcd: EtcdClient, prefix: str) -> None:
        self._etcd = etcd
        self._root = xds_status_root(prefix)
        self._open: dict[tuple[str, str], str] = {}
        self.lease = 0

    def nacked(self, node: str, type_url: str, detail: str) -> None:
        self._open[(node, type_url)] = detail
        self._write(node)

    def acked(self, node: str, type_url: str, version: str) -> None:
        if self._open.pop((node, type_url), None) is not None:
            self._write(node)

    def _write(self, node: str) -> None:
        nacks = {t: d for (n, t), d in self._open.items() if n == node}
        start_background(self._store(node, nacks), f"xds status {node}")

    async def _store(self, node: str, nacks: dict[str, str]) -> None:
        key = self._root + node
        try:
            if nacks:
                await self._etcd.put(key, json.dumps({"nacks": nacks}).encode(), lease=self.lease)
            else:
                await self._etcd.delete(key)
        except MeshError as error:
            log.warning("could not record the xDS status of %s: %s", node, error)


def _own_identity(
    config: MeshConfig, node: SidecarNode, context: grpc.aio.ServicerContext[Any, Any]
) -> str | None:
    """A sidecar gets the config of the service whose certificate it presents, and of
    no other (its listeners and routes say what that service may do)."""
    expected = SpiffeId(config.trust_domain, config.namespace, node.service).uri.encode()
    presented = tuple(context.peer_identities() or ())
    if expected in presented:
        return None
    shown = b", ".join(presented).decode(errors="replace") or "none"
    return f"node {node.node_id} says it is {node.service}, its certificate says {shown}"


async def serve_controlplane(
    config: MeshConfig, etcd_address: str, port: int, stop: asyncio.Event
) -> None:
    """Serve ADS on `port` (0: any) until `stop` is set."""
    etcd = EtcdClient(etcd_address)
    book = _NackBook(etcd, config.etcd.prefix)
    watcher = MeshWatcher(config, etcd, lambda view: ads.update(view))
    ads = AdsServer(
        resources,
        watcher.view,
        on_nack=book.nacked,
        on_ack=book.acked,
        admit=functools.partial(_own_identity, config),
    )
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    identity = IdentityFiles(config.certs_dir, CONTROLPLANE_IDENTITY)
    address = f"{config.host}:{port}"
    try:
        bound = server.add_secure_port(address, server_credentials(identity))
    except RuntimeError as error:
        raise MeshError(f"cannot listen on {address}: is the port taken?") from error
    registration: Registration | None = None
    watcher.start()
    try:
        await server.start()
        endpoint = Endpoint(
            service=CONTROLPLANE_IDENTITY,
            instance_id=CONTROLPLANE_IDENTITY,
            address=f"{config.host}:{bound}",
            metadata={"pid": str(os.getpid())},
        )
        registration = Registration(
            etcd,
            config.etcd.prefix,
            endpoint,
            config.etcd.lease_ttl,
            key=controlplane_key(config.etcd.prefix),
        )
        await registration.start()
        book.lease = registration.lease or 0
        log.info("serving ADS", extra={"address": endpoint.address, "etcd": etcd_address})
        await stop.wait()
    finally:
        await server.stop(1.0)
        if registration is not None:
            await registration.aclose()
        await watcher.aclose()
        await etcd.aclose()
    log.info("stopped")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mesh.xds", description="Run the mesh's xDS control plane."
    )
    parser.add_argument("--config", type=Path, default=Path("mesh.yaml"))
    parser.add_argument("--etcd", help="etcd host:port (default: as instances find it)")
    parser.add_argument("--port", type=int, help="ADS port (default: controlplane.port)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    configure_logging("info", service=CONTROLPLANE_IDENTITY, instance=CONTROLPLANE_IDENTITY)
    try:
        config = load_config(args.config)
        address = args.etcd or etcd_endpoint(config)
        if address is None:
            raise MeshError("no etcd: pass --etcd or start the mesh with `meshctl up`")
    except MeshError as error:
        log.error("cannot start: %s", error)
        return 2
    logging.getLogger().setLevel(config.telemetry.log_level.upper())
    port = config.controlplane.port if args.port is None else args.port

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_controlplane(config, address, port, stop)

    try:
        asyncio.run(run())
    except MeshError as error:
        log.error("cannot start: %s", error)
        return 1
    return 0
