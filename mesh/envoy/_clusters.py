"""CDS: the clusters one sidecar gets. `local_app` is its own app on a Unix socket; every
version of every service is an EDS cluster dialled over mTLS, with the service's
outlier detection, circuit breakers and retry budget."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from mesh.config import ServiceSpec
from mesh.envoy._common import (
    ads_source,
    duration,
    http2_protocol_options,
    pipe_address,
    upstream_tls,
)
from mesh.envoy._model import LOCAL_APP_CLUSTER, MeshView, SidecarNode, cluster_name

__all__ = ["clusters"]

_LOCAL_CONNECT_TIMEOUT = 1.0  # a Unix socket on the same host: connects at once or never
_ENFORCE_ALWAYS = 100


def clusters(view: MeshView, node: SidecarNode) -> list[Any]:
    """The local app's cluster, then one per service version, sorted by service."""
    result = [_local_app_cluster(node)]
    for service in sorted(view.services):
        result += [
            _service_cluster(view, node, service, version) for version in view.versions_of(service)
        ]
    return result


def _local_app_cluster(node: SidecarNode) -> Any:
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=pipe_address(node.app_socket))
    )
    return cluster_pb2.Cluster(
        name=LOCAL_APP_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(_LOCAL_CONNECT_TIMEOUT),
        typed_extension_protocol_options=http2_protocol_options(),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=LOCAL_APP_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )


def _service_cluster(view: MeshView, node: SidecarNode, service: str, version: str) -> Any:
    """One version of a service: endpoints from EDS, certificates checked against the
    service's SPIFFE id, so an endpoint registered under the wrong name is refused."""
    spec = view.services[service]
    return cluster_pb2.Cluster(
        name=cluster_name(service, version),
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
        connect_timeout=duration(view.connect_timeout),
        typed_extension_protocol_options=http2_protocol_options(),
        transport_socket=upstream_tls(node, view.spiffe_id(service)),
        outlier_detection=_outlier_detection(spec),
        circuit_breakers=_circuit_breakers(spec),
    )


def _outlier_detection(spec: ServiceSpec) -> Any:
    """Consecutive 5xx (gRPC UNAVAILABLE, INTERNAL...) and gateway failures (connect
    failures, resets) eject a host; Envoy enforces the latter only at 0% by default."""
    outlier = spec.policy.outlier
    failures = wrappers_pb2.UInt32Value(value=outlier.consecutive_failures)
    enforce = wrappers_pb2.UInt32Value(value=_ENFORCE_ALWAYS)
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=failures,
        consecutive_gateway_failure=failures,
        enforcing_consecutive_5xx=enforce,
        enforcing_consecutive_gateway_failure=enforce,
        interval=duration(outlier.interval),
        base_ejection_time=duration(outlier.base_ejection_time),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=outlier.max_ejection_percent),
    )


def _circuit_breakers(spec: ServiceSpec) -> Any:
    """The connection limits, and a retry budget (which replaces max_retries)."""
    limits = spec.policy.limits
    budget = spec.policy.retries.budget
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            thresholds(
                max_connections=wrappers_pb2.UInt32Value(value=limits.max_connections),
                max_pending_requests=wrappers_pb2.UInt32Value(value=limits.max_pending_requests),
                max_requests=wrappers_pb2.UInt32Value(value=limits.max_requests),
                retry_budget=thresholds.RetryBudget(
                    budget_percent=percent_pb2.Percent(value=budget.percent),
                    min_retry_concurrency=wrappers_pb2.UInt32Value(
                        value=budget.min_retries_per_second
                    ),
                ),
            )
        ]
    )
