"""RDS: the sidecar's two route configurations.

`inbound` sends every call to the local app and carries the authz table as the RBAC
filter's per-route config: in RDS rather than LDS, a change applies to new streams on
connections already open. `outbound` has a virtual host per service that splits calls
over its versions by weight and retries what is safe to retry.
"""

from __future__ import annotations

from typing import Any

from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import wrappers_pb2

from mesh.config import AuthzRule
from mesh.envoy._common import duration, typed
from mesh.envoy._listeners import RBAC_FILTER
from mesh.envoy._model import (
    INBOUND,
    LOCAL_APP_CLUSTER,
    OUTBOUND,
    MeshView,
    SidecarNode,
    cluster_name,
    weights_runtime_prefix,
)

__all__ = ["IDEMPOTENT_HEADER", "routes"]

IDEMPOTENT_HEADER = "x-shopmesh-idempotent"
"""Set by the app's mesh client on calls to idempotent methods: only those are retried
after the request may have reached the server. The sidecar strips it."""

# gRPC's UNAVAILABLE and resets (a per-try timeout included) may come after the server
# acted; connect failures and refused streams never reached it, so any call may retry.
_IDEMPOTENT_RETRY_ON = "unavailable,reset,connect-failure,refused-stream"
_SAFE_RETRY_ON = "connect-failure,refused-stream"
_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_HOST_SELECTION_ATTEMPTS = 3

_Route = route_components_pb2.Route
_RouteAction = route_components_pb2.RouteAction


def routes(view: MeshView, node: SidecarNode) -> list[Any]:
    """The inbound route configuration, then the outbound one. Every sidecar gets the
    same ones today; `node` keeps the signature the other generators have."""
    return [_inbound_routes(view), _outbound_routes(view)]


def _inbound_routes(view: MeshView) -> Any:
    route = _Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=_RouteAction(
            cluster=LOCAL_APP_CLUSTER,
            timeout=duration(0),  # none of Envoy's own: the caller's deadline governs
            max_stream_duration=_grpc_timeout_governs(),
        ),
        typed_per_filter_config={RBAC_FILTER: typed(_authz_rbac(view))},
    )
    host = route_components_pb2.VirtualHost(name=INBOUND, domains=["*"], routes=[route])
    return route_pb2.RouteConfiguration(name=INBOUND, virtual_hosts=[host])


def _grpc_timeout_governs() -> Any:
    """A grpc-timeout header, when present, is the call's timeout, uncapped."""
    return _RouteAction.MaxStreamDuration(grpc_timeout_header_max=duration(0))


def _authz_rbac(view: MeshView) -> Any:
    """The authz table (as mesh.authz.AuthzTable reads it) as RBAC: rule i is policy
    `authz-<i>`, allowing any of its callers to call any of its methods. No rules, no
    policies: everything is denied."""
    policies = {f"authz-{i}": _policy(view, rule) for i, rule in enumerate(view.authz)}
    rules = rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.ALLOW, policies=policies)
    return rbac_pb2.RBACPerRoute(rbac=rbac_pb2.RBAC(rules=rules))


def _policy(view: MeshView, rule: AuthzRule) -> Any:
    return rbac_config_pb2.Policy(
        permissions=[_permission(method) for method in rule.methods],
        principals=[_principal(view, caller) for caller in rule.callers],
    )


def _permission(method: str) -> Any:
    """Permission for `*`, `pkg.Service/*` or `pkg.Service/Method` (gRPC's path is
    "/" + the method)."""
    if method == "*":
        return rbac_config_pb2.Permission(any=True)
    service, _, name = method.partition("/")
    if name == "*":
        path = string_pb2.StringMatcher(prefix=f"/{service}/")
    else:
        path = string_pb2.StringMatcher(exact=f"/{method}")
    return rbac_config_pb2.Permission(url_path=path_pb2.PathMatcher(path=path))


def _principal(view: MeshView, caller: str) -> Any:
    """A caller name is one SPIFFE id; "*" is any identity of this trust domain and
    namespace (the client certificate's URI SAN)."""
    if caller == "*":
        any_name = view.spiffe_id("")  # spiffe://<td>/ns/<ns>/sa/
        name = string_pb2.StringMatcher(prefix=any_name)
    else:
        name = string_pb2.StringMatcher(exact=view.spiffe_id(caller))
    return rbac_config_pb2.Principal(
        authenticated=rbac_config_pb2.Principal.Authenticated(principal_name=name)
    )


def _outbound_routes(view: MeshView) -> Any:
    hosts = [_service_host(view, service) for service in sorted(view.services)]
    return route_pb2.RouteConfiguration(name=OUTBOUND, virtual_hosts=hosts)


def _service_host(view: MeshView, service: str) -> Any:
    """Calls to `service` (its name as :authority, with or without a port). Idempotent
    calls come first: routes match in order, and the second matches every call."""
    retries = view.services[service].policy.retries
    idempotent = _Route(
        name=f"{service}-idempotent",
        match=route_components_pb2.RouteMatch(
            prefix="/",
            headers=[
                route_components_pb2.HeaderMatcher(name=IDEMPOTENT_HEADER, present_match=True)
            ],
        ),
        route=_service_action(
            view, service, _IDEMPOTENT_RETRY_ON, retries.per_try_timeout or view.per_try_timeout
        ),
        request_headers_to_remove=[IDEMPOTENT_HEADER],
    )
    any_call = _Route(
        name=f"{service}-any",
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=_service_action(view, service, _SAFE_RETRY_ON),
    )
    return route_components_pb2.VirtualHost(
        name=service, domains=[service, f"{service}:*"], routes=[idempotent, any_call]
    )


def _service_action(
    view: MeshView, service: str, retry_on: str, per_try_timeout: float | None = None
) -> Any:
    """To the service's versions by weight. Only a call that may be retried after it
    reached the server gets a per-try timeout: cut off, any other would fail."""
    policy = view.services[service].policy
    action = _RouteAction(
        weighted_clusters=_weighted_clusters(view, service),
        timeout=duration(policy.timeout or view.default_timeout),
        max_stream_duration=_grpc_timeout_governs(),
        retry_policy=route_components_pb2.RetryPolicy(
            retry_on=retry_on,
            num_retries=wrappers_pb2.UInt32Value(
                value=(policy.retries.attempts or view.attempts) - 1
            ),
            retry_host_predicate=[
                route_components_pb2.RetryPolicy.RetryHostPredicate(
                    name=_PREVIOUS_HOSTS,
                    typed_config=typed(previous_hosts_pb2.PreviousHostsPredicate()),
                )
            ],
            host_selection_retry_max_attempts=_HOST_SELECTION_ATTEMPTS,
        ),
    )
    if per_try_timeout is not None:
        action.retry_policy.per_try_timeout.CopyFrom(duration(per_try_timeout))
    return action


def _weighted_clusters(view: MeshView, service: str) -> Any:
    """Every version, weight 0 included, so a runtime override
    (`weights.<service>.<cluster>`) can send calls to any of them."""
    versions = view.versions_of(service)
    weights = view.weights_of(service)
    if not any(weights.get(version, 0) for version in versions):
        # Envoy refuses (NACKs) the whole route config if a split sums to 0, as live
        # weights naming only versions not declared do: route as declared instead.
        weights = view.services[service].declared_weights()
    return route_components_pb2.WeightedCluster(
        clusters=[
            route_components_pb2.WeightedCluster.ClusterWeight(
                name=cluster_name(service, version),
                weight=wrappers_pb2.UInt32Value(value=weights.get(version, 0)),
            )
            for version in versions
        ],
        runtime_key_prefix=weights_runtime_prefix(service),
    )
