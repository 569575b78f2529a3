"""LDS: the sidecar's two listeners.

`inbound` terminates mTLS from other sidecars and hands calls to the local app through
RBAC, the local rate limit and fault injection (the service's own policy); `outbound`
is the Unix socket the app's mesh client calls other services through. Both take their
routes from RDS, so authz and weight changes reach streams on open connections.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import token_bucket_pb2
from google.protobuf import wrappers_pb2

from mesh.config import FaultPolicy, RateLimitPolicy, TrafficPolicy
from mesh.envoy._common import (
    ads_source,
    downstream_tls,
    duration,
    percent,
    pipe_address,
    socket_address,
    typed,
)
from mesh.envoy._model import INBOUND, OUTBOUND, MeshView, SidecarNode

__all__ = ["HTTP_CONNECTION_MANAGER", "RBAC_FILTER", "listeners"]

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
RBAC_FILTER = "envoy.filters.http.rbac"
"""The name routes key their RBACPerRoute by (typed_per_filter_config)."""
_LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
_FAULT_FILTER = "envoy.filters.http.fault"
_GRPC_STATS_FILTER = "envoy.filters.http.grpc_stats"
_ROUTER_FILTER = "envoy.filters.http.router"

_HCM = hcm_pb2.HttpConnectionManager
_HEALTH_SERVICE = "grpc.health.v1.Health"
_OWNER_ONLY = 0o600  # the app's user alone may call out through the sidecar
_REFILL_INTERVAL = 1.0  # seconds: the bucket gains tokens_per_second each second


def listeners(view: MeshView, node: SidecarNode) -> list[Any]:
    """The inbound listener, then the outbound one. Raises ValueError if the node's
    service is not one of the mesh's (its inbound policy would be unknown)."""
    spec = view.services.get(node.service)
    if spec is None:
        raise ValueError(f"node {node.node_id!r}: the mesh has no service {node.service!r}")
    return [_inbound_listener(node, spec.policy), _outbound_listener(node)]


def _inbound_listener(node: SidecarNode, policy: TrafficPolicy) -> Any:
    manager = _HCM(
        stat_prefix=INBOUND,
        codec_type=_HCM.AUTO,
        rds=_rds(INBOUND),
        # The app learns its caller from this header: Envoy drops any the caller sent
        # and sets the URI SAN of the client certificate it verified.
        forward_client_cert_details=_HCM.SANITIZE_SET,
        set_current_client_cert_details=_HCM.SetCurrentClientCertDetails(uri=True),
        http_filters=[
            _http_filter(RBAC_FILTER, _deny_all()),
            _http_filter(_LOCAL_RATELIMIT_FILTER, _local_rate_limit(policy.rate_limit)),
            _http_filter(_FAULT_FILTER, _fault(policy.faults)),
            _http_filter(
                _GRPC_STATS_FILTER,
                grpc_stats_pb2.FilterConfig(
                    stats_for_all_methods=wrappers_pb2.BoolValue(value=True),
                    enable_upstream_stats=True,
                ),
            ),
            _http_filter(_ROUTER_FILTER, router_pb2.Router()),
        ],
    )
    chain = listener_components_pb2.FilterChain(
        filters=[_network_filter(manager)], transport_socket=downstream_tls(node)
    )
    return listener_pb2.Listener(
        name=INBOUND,
        address=socket_address(node.inbound_host, node.inbound_port),
        filter_chains=[chain],
    )


def _outbound_listener(node: SidecarNode) -> Any:
    # Plain HTTP/2 on a socket only the app's user may open: the app speaks h2c with
    # prior knowledge, and codec AUTO detects it from the connection preface.
    manager = _HCM(
        stat_prefix=OUTBOUND,
        codec_type=_HCM.AUTO,
        rds=_rds(OUTBOUND),
        http_filters=[
            _http_filter(
                _GRPC_STATS_FILTER,
                grpc_stats_pb2.FilterConfig(
                    stats_for_all_methods=wrappers_pb2.BoolValue(value=True)
                ),
            ),
            _http_filter(_ROUTER_FILTER, router_pb2.Router()),
        ],
    )
    chain = listener_components_pb2.FilterChain(filters=[_network_filter(manager)])
    return listener_pb2.Listener(
        name=OUTBOUND,
        address=pipe_address(node.outbound_socket, mode=_OWNER_ONLY),
        filter_chains=[chain],
    )


def _rds(route_config_name: str) -> Any:
    return hcm_pb2.Rds(config_source=ads_source(), route_config_name=route_config_name)


def _network_filter(manager: Any) -> Any:
    return listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER, typed_config=typed(manager))


def _http_filter(name: str, config: Any) -> Any:
    return hcm_pb2.HttpFilter(name=name, typed_config=typed(config))


def _deny_all() -> Any:
    """ALLOW with no policy allows nothing: a route without its own RBACPerRoute (the
    authz table, from RDS) is closed, never open."""
    return rbac_pb2.RBAC(rules=rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.ALLOW))


def _local_rate_limit(limit: RateLimitPolicy) -> Any:
    """One bucket for every caller of this instance. Runtime keys switch it on (enabled
    alone counts, shadow mode) and make it refuse (enforced)."""
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=INBOUND,
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=limit.burst,
            tokens_per_fill=wrappers_pb2.UInt32Value(value=limit.tokens_per_second),
            fill_interval=duration(_REFILL_INTERVAL),
        ),
        filter_enabled=base_pb2.RuntimeFractionalPercent(
            default_value=percent(limit.enabled_percent), runtime_key="ratelimit.enabled"
        ),
        filter_enforced=base_pb2.RuntimeFractionalPercent(
            default_value=percent(limit.enforced_percent), runtime_key="ratelimit.enforced"
        ),
    )


def _fault(faults: FaultPolicy) -> Any:
    """Both blocks are always present: a runtime key acts only on a block the config
    has, and the declared shares (usually 0) keep it off until changed at run time.
    Health checks are spared: a fault is the app's, and the mesh must still see the
    instance as serving (as `meshctl status` and the supervisor do)."""
    return fault_pb2.HTTPFault(
        delay=common_fault_pb2.FaultDelay(
            fixed_delay=duration(faults.delay_ms / 1000),
            percentage=percent(faults.delay_percent),
        ),
        abort=fault_pb2.FaultAbort(
            grpc_status=faults.abort_grpc_status,
            percentage=percent(faults.abort_percent),
        ),
        delay_percent_runtime="fault.delay_percent",
        delay_duration_runtime="fault.delay_ms",
        abort_percent_runtime="fault.abort_percent",
        abort_grpc_status_runtime="fault.abort_grpc_status",
        headers=[_not_health_check()],
    )


def _not_health_check() -> Any:
    return route_components_pb2.HeaderMatcher(
        name=":path",
        string_match=string_pb2.StringMatcher(prefix=f"/{_HEALTH_SERVICE}/"),
        invert_match=True,
    )
