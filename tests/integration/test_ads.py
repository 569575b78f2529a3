"""The ADS server against a real Envoy: initial sync, pushes, NACKs, the re-request
Envoy sends after a CDS or LDS push, and a control plane that dies and comes back.

The resources come from a small build of this module's own (one EDS cluster per
service version, a listener whose routes come over RDS), not from mesh.envoy, and the
xDS stream is plaintext; the point here is the protocol.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from mesh.config import ServiceSpec
from mesh.envoy._model import MeshView, SidecarNode, cluster_name
from mesh.errors import MeshError
from mesh.process import free_port
from mesh.registry import Endpoint
from mesh.server._envoy import EnvoyProcess
from mesh.xds import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, AdsServer

pytestmark = pytest.mark.integration

ROUTES = "outbound"
FAST = 2.0
"""Seconds within which a push must show in Envoy (it takes milliseconds; Envoy's
warming timeout, which a missed re-request would hit, is 15 s)."""


# --- the mesh and what this test's control plane makes of it ---------------------------


def endpoint(port: int, version: str = "v1", service: str = "echo") -> Endpoint:
    return Endpoint(service, f"{service}-{version}-{port}", f"127.0.0.1:{port}", version)


def mesh_view(*endpoints: Endpoint, services: Sequence[str] = ("echo",)) -> MeshView:
    by_service: dict[str, frozenset[Endpoint]] = {}
    for item in endpoints:
        by_service[item.service] = by_service.get(item.service, frozenset()) | {item}
    specs = {name: ServiceSpec(name=name, module=f"services.{name}") for name in services}
    return MeshView("shop.local", "default", specs, by_service)


def _duration(seconds: float) -> Any:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _typed(message: Message) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ads() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _address(host: str, port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


@dataclass
class EchoBuild:
    """The test's Build. Knobs change what it makes of the same view: `connect_timeout`
    changes every cluster (not its endpoints), `broken` makes a cluster Envoy refuses,
    `stat_prefix` changes the listener (not its routes)."""

    listener_port: int
    connect_timeout: float = 1.0
    broken: bool = False
    stat_prefix: str = "outbound"
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def __call__(
        self, view: MeshView, node: SidecarNode, type_url: str, names: Sequence[str]
    ) -> Sequence[Message]:
        self.calls.append((type_url, tuple(names)))
        if type_url == CLUSTER_TYPE:
            return [self._cluster(name) for name in self._clusters(view)]
        if type_url == ENDPOINT_TYPE:
            return [self._assignment(view, name) for name in names if name in self._clusters(view)]
        if type_url == LISTENER_TYPE:
            return [self._listener()]
        if type_url == ROUTE_TYPE:
            return [self._routes()] if ROUTES in names else []
        return []

    @staticmethod
    def _clusters(view: MeshView) -> list[str]:
        return [
            cluster_name(service, version)
            for service in sorted(view.services)
            for version in view.versions_of(service)
        ]

    def _cluster(self, name: str) -> Message:
        # Envoy's validation refuses a connect timeout that is not positive: a NACK.
        timeout = -1.0 if self.broken else self.connect_timeout
        return cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
            connect_timeout=_duration(timeout),
        )

    @staticmethod
    def _assignment(view: MeshView, name: str) -> Message:
        service, version = name.split("_")
        hosts = sorted(e.address for e in view.endpoints.get(service, ()) if e.version == version)
        lb_endpoints = [
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=_address(host, int(port)))
            )
            for host, port in (address.rsplit(":", 1) for address in hosts)
        ]
        return endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
        )

    def _listener(self) -> Message:
        manager = hcm_pb2.HttpConnectionManager(
            stat_prefix=self.stat_prefix,
            rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=ROUTES),
            http_filters=[
                hcm_pb2.HttpFilter(
                    name="envoy.filters.http.router", typed_config=_typed(router_pb2.Router())
                )
            ],
        )
        return listener_pb2.Listener(
            name="outbound",
            address=_address("127.0.0.1", self.listener_port),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[
                        listener_components_pb2.Filter(
                            name="envoy.filters.network.http_connection_manager",
                            typed_config=_typed(manager),
                        )
                    ]
                )
            ],
        )

    @staticmethod
    def _routes() -> Message:
        route = route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"),
            route=route_components_pb2.RouteAction(cluster=cluster_name("echo", "v1")),
        )
        host = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[route])
        return route_pb2.RouteConfiguration(name=ROUTES, virtual_hosts=[host])


# --- the control plane, Envoy, and polling ----------------------------------------------


class ControlPlane:
    """An AdsServer on a loopback port; it can be killed and started again on that port."""

    def __init__(self, build: EchoBuild) -> None:
        self.build = build
        self.port = 0
        self.nacks: list[tuple[str, str, str]] = []
        self.acks: list[tuple[str, str, str]] = []
        self.ads: AdsServer | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self, view: MeshView) -> AdsServer:
        self.ads = AdsServer(
            self.build,
            view,
            on_nack=lambda *nack: self.nacks.append(nack),
            on_ack=lambda *ack: self.acks.append(ack),
        )
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.ads, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()
        return self.ads

    async def kill(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


NODE = SidecarNode(
    node_id="echo-v1-0",
    service="echo",
    version="v1",
    inbound_host="127.0.0.1",
    inbound_port=1,
    app_socket="/nonexistent/app.sock",
    outbound_socket="/nonexistent/outbound.sock",
    cert_chain="/nonexistent/cert.pem",
    private_key="/nonexistent/key.pem",
    ca="/nonexistent/ca.pem",
)


def bootstrap(xds_port: int) -> dict[str, Any]:
    """A sidecar's bootstrap reduced to ADS: the node, admin on a free port, and a
    static HTTP/2 cluster of the control plane (plaintext here)."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": NODE.node_id, "cluster": NODE.service, "metadata": NODE.metadata()},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": "xds",
                            # Reconnect quickly once the control plane is back.
                            "retry_policy": {
                                "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}
                            },
                        }
                    }
                ],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = FAST) -> float:
    """Seconds until `check` holds; fails if it does not within `timeout`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s: {check.__name__}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def all_acked(ads: AdsServer) -> bool:
    """Whether the sidecar has accepted the last response of each of the four types."""
    status = ads.nodes.get(NODE.node_id)
    types = status.types.values() if status else ()
    return len(types) == 4 and all(t.acked_version == t.sent_version for t in types)


async def hosts(envoy: EnvoyProcess, cluster: str) -> set[str]:
    """The hosts `/clusters` lists for an active cluster."""
    status, body = await envoy.admin("/clusters")
    assert status == 200, body
    prefix = f"{cluster}::"
    return {
        line.split("::")[1]
        for line in body.splitlines()
        if line.startswith(prefix) and "::health_flags::" in line
    }


async def stat(envoy: EnvoyProcess, name: str) -> int:
    status, body = await envoy.admin(f"/stats?filter=^{name}$")
    assert status == 200, body
    values = [line.split(": ")[1] for line in body.splitlines() if line.startswith(f"{name}: ")]
    assert values, f"no stat {name}: {body!r}"
    return int(values[0])


async def config_dump(envoy: EnvoyProcess, resource: str) -> list[dict[str, Any]]:
    status, body = await envoy.admin(f"/config_dump?resource={resource}")
    assert status == 200, body
    configs: list[dict[str, Any]] = json.loads(body).get("configs", [])
    return configs


def http_status(port: int) -> int:
    """Status of a plain GET through the listener: 503 means it routed to a cluster whose
    hosts refuse, 404 that no route matched."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def build() -> EchoBuild:
    return EchoBuild(listener_port=free_port())


@pytest.fixture
async def control(build: EchoBuild) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(build)
    try:
        yield plane
    finally:
        await plane.kill()


@pytest.fixture
def envoy(control: ControlPlane, tmp_path: Path) -> EnvoyProcess:
    """An Envoy of the control plane's port, not started (the port is known only once
    the control plane is)."""
    return EnvoyProcess({}, workdir=tmp_path, log_path=tmp_path / "envoy.log", name="echo-v1-0")


@pytest.fixture
async def sidecar(
    control: ControlPlane, envoy: EnvoyProcess, build: EchoBuild
) -> AsyncIterator[tuple[AdsServer, EnvoyProcess]]:
    """A control plane serving one endpoint of echo v1, and an Envoy ready on it."""
    ads = await control.start(mesh_view(endpoint(free_port())))
    envoy.bootstrap = bootstrap(control.port)
    try:
        await envoy.start()
        await envoy.wait_ready(timeout=10)
        await eventually(lambda: all_acked(ads))
        yield ads, envoy
    finally:
        await envoy.stop()


# --- tests ------------------------------------------------------------------------------


async def test_sidecar_gets_ready_with_its_clusters_listener_and_routes(
    sidecar: tuple[AdsServer, EnvoyProcess], build: EchoBuild, control: ControlPlane
) -> None:
    ads, envoy = sidecar
    (expected,) = ads.view.endpoints["echo"]

    assert await hosts(envoy, "echo_v1") == {expected.address}
    assert await asyncio.to_thread(http_status, build.listener_port) == 503
    status = ads.nodes[NODE.node_id]
    assert status.node == NODE
    assert set(status.types) == {CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE}
    assert all(t.nack is None for t in status.types.values())
    assert control.nacks == []


async def test_endpoint_changes_reach_clusters_fast(
    sidecar: tuple[AdsServer, EnvoyProcess],
) -> None:
    ads, envoy = sidecar
    (first,) = ads.view.endpoints["echo"]
    second = endpoint(free_port())

    ads.update(mesh_view(first, second))

    async def both_listed() -> bool:
        return await hosts(envoy, "echo_v1") == {first.address, second.address}

    await eventually(both_listed)

    ads.update(mesh_view(second))

    async def first_gone() -> bool:
        return await hosts(envoy, "echo_v1") == {second.address}

    await eventually(first_gone)


async def test_a_rejected_push_is_reported_and_a_later_good_one_accepted(
    sidecar: tuple[AdsServer, EnvoyProcess], build: EchoBuild, control: ControlPlane
) -> None:
    ads, envoy = sidecar
    good_version = ads.nodes[NODE.node_id].types[CLUSTER_TYPE].acked_version
    build.broken = True

    ads.update(ads.view)

    async def nacked() -> bool:
        return bool(control.nacks)

    await eventually(nacked)
    ((node_id, type_url, detail),) = control.nacks
    assert (node_id, type_url) == (NODE.node_id, CLUSTER_TYPE)
    assert "Expected positive duration" in detail  # Envoy's own words
    status = ads.nodes[NODE.node_id].types[CLUSTER_TYPE]
    assert status.nack == detail
    assert status.acked_version == good_version != status.sent_version
    assert await hosts(envoy, "echo_v1")  # Envoy keeps the clusters it had

    build.broken, build.connect_timeout = False, 2.0
    control.acks.clear()
    ads.update(ads.view)

    async def accepted() -> bool:
        return any(type_url == CLUSTER_TYPE for _, type_url, _ in control.acks)

    await eventually(accepted)
    status = ads.nodes[NODE.node_id].types[CLUSTER_TYPE]
    assert status.nack is None
    assert status.acked_version == status.sent_version != good_version
    assert len(control.nacks) == 1  # the rejected resources were not sent again


async def test_a_new_cluster_is_active_at_once(sidecar: tuple[AdsServer, EnvoyProcess]) -> None:
    ads, envoy = sidecar
    (first,) = ads.view.endpoints["echo"]
    other = endpoint(free_port(), service="stock")

    ads.update(mesh_view(first, other, services=("echo", "stock")))

    async def active() -> bool:
        return await hosts(envoy, "stock_v1") == {other.address}

    await eventually(active)
    assert await stat(envoy, "cluster_manager.warming_clusters") == 0


async def test_a_changed_cluster_is_answered_its_endpoints_again(
    sidecar: tuple[AdsServer, EnvoyProcess], build: EchoBuild
) -> None:
    # The cluster changes and its endpoints do not: Envoy re-sends the EDS request it
    # last sent, and the cluster warms until that request is answered.
    ads, envoy = sidecar
    build.connect_timeout = 3.0

    ads.update(ads.view)

    async def updated_and_warm() -> bool:
        warming = await config_dump(envoy, "dynamic_warming_clusters")
        active = await config_dump(envoy, "dynamic_active_clusters")
        timeouts = {c["cluster"]["name"]: c["cluster"].get("connect_timeout") for c in active}
        return not warming and timeouts.get("echo_v1") == "3s"

    await eventually(updated_and_warm)
    assert await hosts(envoy, "echo_v1")


async def test_a_changed_listener_keeps_its_routes(
    sidecar: tuple[AdsServer, EnvoyProcess], build: EchoBuild
) -> None:
    ads, envoy = sidecar
    build.stat_prefix = "renamed"

    ads.update(ads.view)

    async def replaced() -> bool:
        active = await config_dump(envoy, "dynamic_listeners")
        states = [listener.get("active_state", {}) for listener in active]
        warm = not any("warming_state" in listener for listener in active)
        return warm and "renamed" in json.dumps(states)

    await eventually(replaced)
    assert await asyncio.to_thread(http_status, build.listener_port) == 503


async def test_envoy_keeps_its_config_without_control_plane_and_resyncs(
    sidecar: tuple[AdsServer, EnvoyProcess], control: ControlPlane
) -> None:
    ads, envoy = sidecar
    (first,) = ads.view.endpoints["echo"]

    await control.kill()

    async def disconnected() -> bool:
        return await stat(envoy, "control_plane.connected_state") == 0

    await eventually(disconnected)
    assert await hosts(envoy, "echo_v1") == {first.address}

    second = endpoint(free_port())
    restarted = await control.start(mesh_view(second))

    async def resynced() -> bool:
        return await hosts(envoy, "echo_v1") == {second.address}

    await eventually(resynced, timeout=5.0)  # after Envoy's reconnect backoff
    assert NODE.node_id in restarted.nodes


async def test_an_envoy_that_exits_fails_with_its_log(tmp_path: Path) -> None:
    envoy = EnvoyProcess(
        {"no_such_field": 1}, workdir=tmp_path, log_path=tmp_path / "bad.log", name="bad"
    )
    try:
        await envoy.start()
        with pytest.raises(MeshError, match="no_such_field"):
            await envoy.wait_ready(timeout=10)
        assert envoy.returncode not in (None, 0)
    finally:
        await envoy.stop()


async def test_an_envoy_without_its_control_plane_is_not_ready_and_is_stopped(
    tmp_path: Path,
) -> None:
    envoy = EnvoyProcess(
        bootstrap(free_port()), workdir=tmp_path, log_path=tmp_path / "e.log", name="alone"
    )
    try:
        await envoy.start()
        with pytest.raises(MeshError, match="not ready"):
            await envoy.wait_ready(timeout=0.5)
        assert envoy.returncode is not None
    finally:
        await envoy.stop()
