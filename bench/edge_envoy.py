"""The edge rows' reference: Envoy 1.40 with `envoy.filters.http.grpc_json_transcoder`
configured from the same descriptor set the edge reads, in front of the same backend.

One static HTTP/1.1 listener (codec AUTO: h2load --h1 speaks HTTP/1.1 to it) whose
connection manager runs the transcoder for the services named, then the router to
one static cluster: the backend, over h2c. The transcoder prints JSON as the edge
does (lowerCamelCase names, default values left out, no whitespace) and turns a gRPC
error into a `{"code","message","details"}` body (`convert_grpc_status`). The router
adds no x-envoy-* headers, so the answer is about the size of the edge's.

The bootstrap is built from xds-protos' typed messages (as mesh.envoy builds the
sidecars'), so a field name that Envoy would not know fails here, not at start-up;
tests/unit/bench checks it with `envoy --mode validate`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.grpc_json_transcoder.v3 import transcoder_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, json_format

from bench import placement
from bench.aio import to_completion

__all__ = [
    "CLUSTER",
    "LISTENER",
    "EdgeEnvoy",
    "edge_envoy",
    "listener_port",
    "transcoder_bootstrap",
]

LISTENER = "edge_http"
CLUSTER = "backend"
ROUTE_TIMEOUT = 10.0  # seconds: as the edge's default deadline
_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _typed(message: Any) -> Any:
    """`message` packed for a typed_config field (as mesh.envoy packs its own)."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return packed


def _address(host: str, port: int) -> Any:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def _seconds(value: float) -> Any:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def _transcoder(descriptor_set: Path, services: Sequence[str]) -> Any:
    return transcoder_pb2.GrpcJsonTranscoder(
        proto_descriptor=str(descriptor_set),
        services=list(services),
        print_options=transcoder_pb2.GrpcJsonTranscoder.PrintOptions(
            add_whitespace=False,
            always_print_primitive_fields=False,
            always_print_enums_as_ints=False,
            preserve_proto_field_names=False,
        ),
        convert_grpc_status=True,
    )


def _connection_manager(descriptor_set: Path, services: Sequence[str]) -> Any:
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=route_components_pb2.RouteAction(cluster=CLUSTER, timeout=_seconds(ROUTE_TIMEOUT)),
    )
    return hcm_pb2.HttpConnectionManager(
        stat_prefix="edge",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(
            name="edge",
            virtual_hosts=[
                route_components_pb2.VirtualHost(name="edge", domains=["*"], routes=[route])
            ],
        ),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.grpc_json_transcoder",
                typed_config=_typed(_transcoder(descriptor_set, services)),
            ),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router",
                typed_config=_typed(router_pb2.Router(suppress_envoy_headers=True)),
            ),
        ],
    )


def _backend(host: str, port: int) -> Any:
    h2c = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_address(host, port))
    )
    return cluster_pb2.Cluster(
        name=CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_seconds(1.0),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
        typed_extension_protocol_options={_HTTP_PROTOCOL_OPTIONS: _typed(h2c)},
    )


def transcoder_bootstrap(
    descriptor_set: Path,
    services: Sequence[str],
    *,
    upstream: tuple[str, int],
    listen: tuple[str, int],
    admin_host: str = "127.0.0.1",
) -> dict[str, Any]:
    """The bootstrap (JSON-able data, snake_case names) of an Envoy serving HTTP/JSON on
    `listen` (port 0: any free port, see `listener_port`) for `services` of
    `descriptor_set`, transcoded to gRPC over h2c to `upstream`; its admin on
    `admin_host`, any free port."""
    host, port = listen
    listener = listener_pb2.Listener(
        name=LISTENER,
        address=_address(host, port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_typed(_connection_manager(descriptor_set, services)),
                    )
                ]
            )
        ],
    )
    message = bootstrap_pb2.Bootstrap(
        admin=bootstrap_pb2.Admin(address=_address(admin_host, 0)),
        static_resources=bootstrap_pb2.Bootstrap.StaticResources(
            listeners=[listener], clusters=[_backend(*upstream)]
        ),
    )
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def listener_port(listeners: str, name: str = LISTENER) -> int | None:
    """The port listener `name` bound, from admin `/listeners?format=json`; None if it
    is not listed (yet)."""
    try:
        document = json.loads(listeners)
    except ValueError:
        return None
    for status in document.get("listener_statuses", ()):
        if status.get("name") == name:
            port = status.get("local_address", {}).get("socket_address", {}).get("port_value")
            return int(port) if port else None
    return None


@dataclass(frozen=True)
class EdgeEnvoy:
    pid: int
    port: int  # the HTTP listener's
    admin: str  # host:port


@asynccontextmanager
async def edge_envoy(
    descriptor_set: Path,
    services: Sequence[str],
    *,
    upstream: tuple[str, int],
    workdir: Path,
    cpus: frozenset[int] | None,
) -> AsyncIterator[EdgeEnvoy]:
    """An Envoy on `transcoder_bootstrap` (one worker thread, as the sidecars), started
    on `cpus`, ready and listening; stopped on exit."""
    from mesh.errors import MeshError
    from mesh.server import EnvoyProcess

    document = transcoder_bootstrap(
        descriptor_set, services, upstream=upstream, listen=("127.0.0.1", 0)
    )
    process = EnvoyProcess(
        document, workdir=workdir, log_path=workdir / "edge-envoy.log", name="edge-envoy"
    )
    try:
        with placement.launching_on(cpus):
            await process.start()
        admin = await process.wait_ready(30.0)
        status, body = await process.admin("/listeners?format=json")
        port = listener_port(body) if status == 200 else None
        if port is None or process.pid is None:
            raise MeshError(f"edge Envoy lists no {LISTENER} listener (admin answered {status})")
        yield EdgeEnvoy(process.pid, port, admin)
    finally:
        await to_completion(process.stop())
