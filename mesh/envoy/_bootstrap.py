"""The sidecar's bootstrap (Envoy's `-c` file): who it is, where its admin listens,
how it reaches the control plane over mTLS, and the runtime layers that faults and
rate limits are switched through. Everything else comes over ADS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import backoff_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import json_format, struct_pb2

from mesh.config import ServiceSpec
from mesh.envoy._common import (
    ads_source,
    duration,
    http2_protocol_options,
    socket_address,
    upstream_tls,
)
from mesh.envoy._model import XDS_CLUSTER, SidecarNode

__all__ = ["bootstrap", "runtime_defaults"]

_XDS_CONNECT_TIMEOUT = 1.0


def runtime_defaults(spec: ServiceSpec) -> dict[str, float]:
    """RUNTIME_KEYS' values as `spec`'s policy declares them: the static layer, so that
    `/runtime` lists every key and an override removed falls back to the declaration."""
    faults = spec.policy.faults
    limit = spec.policy.rate_limit
    defaults = {
        "fault.delay_percent": faults.delay_percent,
        "fault.delay_ms": faults.delay_ms,
        "fault.abort_percent": faults.abort_percent,
        "fault.abort_grpc_status": faults.abort_grpc_status,
        "ratelimit.enabled": limit.enabled_percent,
        "ratelimit.enforced": limit.enforced_percent,
    }
    return {key: float(value) for key, value in defaults.items()}


def bootstrap(
    node: SidecarNode,
    *,
    xds_host: str,
    xds_port: int,
    controlplane_spiffe: str,
    admin_host: str,
    admin_port: int = 0,
    runtime: Mapping[str, float],
) -> dict[str, Any]:
    """The bootstrap of `node`'s sidecar as JSON-able data (snake_case field names).

    `controlplane_spiffe` is the only identity it takes config from; `runtime` is the
    static runtime layer (see `runtime_defaults`). With `admin_port` 0 Envoy picks a
    port; `--admin-address-path` tells it.
    """
    message = bootstrap_pb2.Bootstrap(
        node=_node(node),
        admin=bootstrap_pb2.Admin(address=socket_address(admin_host, admin_port)),
        static_resources=bootstrap_pb2.Bootstrap.StaticResources(
            clusters=[_xds_cluster(node, xds_host, xds_port, controlplane_spiffe)]
        ),
        dynamic_resources=_dynamic_resources(),
        layered_runtime=_layered_runtime(runtime),
        # Histograms' quantiles are computed at each flush (default 5 s): a canary
        # step judges the p99 of its own seconds.
        stats_flush_interval=duration(1.0),
    )
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def _node(node: SidecarNode) -> Any:
    metadata = struct_pb2.Struct()
    metadata.update(node.metadata())
    return base_pb2.Node(id=node.node_id, cluster=node.service, metadata=metadata)


def _xds_cluster(node: SidecarNode, host: str, port: int, controlplane_spiffe: str) -> Any:
    # ADS is a gRPC stream, so HTTP/2; mTLS with the instance's own certificate.
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port))
    )
    return cluster_pb2.Cluster(
        name=XDS_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(_XDS_CONNECT_TIMEOUT),
        typed_extension_protocol_options=http2_protocol_options(),
        transport_socket=upstream_tls(node, controlplane_spiffe),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=XDS_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )


def _dynamic_resources() -> Any:
    ads = config_source_pb2.ApiConfigSource(
        api_type=config_source_pb2.ApiConfigSource.GRPC,
        transport_api_version=config_source_pb2.V3,
        grpc_services=[
            grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                    cluster_name=XDS_CLUSTER,
                    # A restarted control plane is back within a second or two: find it
                    # then, not after Envoy's default backoff.
                    retry_policy=base_pb2.RetryPolicy(
                        retry_back_off=backoff_pb2.BackoffStrategy(
                            base_interval=duration(0.1), max_interval=duration(1.0)
                        )
                    ),
                )
            )
        ],
    )
    return bootstrap_pb2.Bootstrap.DynamicResources(
        ads_config=ads, lds_config=ads_source(), cds_config=ads_source()
    )


def _layered_runtime(runtime: Mapping[str, float]) -> Any:
    """The static layer holds the defaults; without an admin layer on top,
    `/runtime_modify` answers 503 and nothing can be changed at run time."""
    static = struct_pb2.Struct()
    static.update(dict(runtime))
    return bootstrap_pb2.LayeredRuntime(
        layers=[
            bootstrap_pb2.RuntimeLayer(name="static", static_layer=static),
            bootstrap_pb2.RuntimeLayer(
                name="admin", admin_layer=bootstrap_pb2.RuntimeLayer.AdminLayer()
            ),
        ]
    )
