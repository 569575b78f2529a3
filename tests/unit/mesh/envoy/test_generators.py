"""What the generated Envoy config means: authz as RBAC, version splits, retries, EDS
answers, runtime keys, and the `resources` dispatcher."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

import mesh.envoy
from mesh.config import AuthzRule
from mesh.envoy import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    IDEMPOTENT_HEADER,
    INBOUND,
    LISTENER_TYPE,
    OUTBOUND,
    ROUTE_TYPE,
    RUNTIME_KEYS,
    MeshView,
    resources,
    runtime_defaults,
)
from mesh.envoy._endpoints import endpoints
from mesh.envoy._listeners import listeners
from mesh.envoy._routes import routes
from mesh.registry import Endpoint
from tests.unit.mesh.envoy.fixtures import ENDPOINTS, mesh_view, sidecar_node


def _rbac_policies(view: MeshView) -> dict[str, Any]:
    inbound = routes(view, sidecar_node())[0]
    per_route = rbac_pb2.RBACPerRoute()
    config = inbound.virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.rbac"]
    assert config.Unpack(per_route)
    assert per_route.rbac.HasField("rules")  # absent rules would switch RBAC off
    return {
        name: json_format.MessageToDict(policy, preserving_proto_field_name=True)
        for name, policy in per_route.rbac.rules.policies.items()
    }


def _with_authz(*rules: AuthzRule) -> MeshView:
    return dataclasses.replace(mesh_view(), authz=rules)


def _service_host(view: MeshView, service: str) -> Any:
    outbound = routes(view, sidecar_node())[1]
    return next(host for host in outbound.virtual_hosts if host.name == service)


def _weights(view: MeshView, service: str) -> dict[str, int]:
    clusters = _service_host(view, service).routes[0].route.weighted_clusters.clusters
    return {cluster.name: cluster.weight.value for cluster in clusters}


def _inbound_manager() -> Any:
    inbound = listeners(mesh_view(), sidecar_node())[0]
    manager = hcm_pb2.HttpConnectionManager()
    assert inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


# -- authz -----------------------------------------------------------------------------


def test_any_caller_is_any_identity_of_this_trust_domain_and_namespace() -> None:
    view = _with_authz(AuthzRule(callers=("*",), methods=("shop.a.v1.A/Get",)))

    principals = _rbac_policies(view)["authz-0"]["principals"]

    prefix = {"prefix": "spiffe://shop.local/ns/default/sa/"}
    assert principals == [{"authenticated": {"principal_name": prefix}}]


def test_named_callers_are_exact_spiffe_ids() -> None:
    view = _with_authz(AuthzRule(callers=("order", "admin"), methods=("*",)))

    policy = _rbac_policies(view)["authz-0"]

    assert [p["authenticated"]["principal_name"] for p in policy["principals"]] == [
        {"exact": "spiffe://shop.local/ns/default/sa/order"},
        {"exact": "spiffe://shop.local/ns/default/sa/admin"},
    ]
    assert policy["permissions"] == [{"any": True}]


def test_method_patterns_become_path_matchers() -> None:
    view = _with_authz(AuthzRule(callers=("order",), methods=("shop.a.v1.A/*", "shop.b.v1.B/Get")))

    permissions = _rbac_policies(view)["authz-0"]["permissions"]

    assert permissions == [
        {"url_path": {"path": {"prefix": "/shop.a.v1.A/"}}},
        {"url_path": {"path": {"exact": "/shop.b.v1.B/Get"}}},
    ]


def test_one_policy_per_rule_named_by_its_index() -> None:
    assert set(_rbac_policies(mesh_view())) == {"authz-0", "authz-1", "authz-2"}


def test_no_rules_deny_everything() -> None:
    assert _rbac_policies(_with_authz()) == {}


def test_the_listener_denies_what_no_route_allows() -> None:
    rbac_filter = _inbound_manager().http_filters[0]
    listener_rbac = rbac_pb2.RBAC()
    assert rbac_filter.typed_config.Unpack(listener_rbac)

    assert rbac_filter.name == "envoy.filters.http.rbac"
    assert listener_rbac.HasField("rules")
    assert len(listener_rbac.rules.policies) == 0


def test_inbound_filters_run_in_order_and_end_with_the_router() -> None:
    names = [f.name for f in _inbound_manager().http_filters]

    assert names == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.fault",
        "envoy.filters.http.grpc_stats",
        "envoy.filters.http.router",
    ]


def test_a_node_of_no_known_service_is_refused() -> None:
    stranger = dataclasses.replace(sidecar_node(), service="nosuch")

    with pytest.raises(ValueError, match="no service 'nosuch'"):
        listeners(mesh_view(), stranger)


# -- weights and retries ---------------------------------------------------------------


def test_declared_weights_split_the_versions() -> None:
    assert _weights(mesh_view(), "inventory") == {"inventory_v1": 90, "inventory_v2": 10}


def test_a_version_without_weight_keeps_its_cluster_at_zero() -> None:
    canary = Endpoint("inventory", "inventory-9", "127.0.0.1:15069", "v3")
    view = dataclasses.replace(
        mesh_view(), endpoints={**ENDPOINTS, "inventory": ENDPOINTS["inventory"] | {canary}}
    )

    weights = _weights(view, "inventory")

    assert weights == {"inventory_v1": 90, "inventory_v2": 10, "inventory_v3": 0}


def test_live_weights_replace_declared_ones_zero_included() -> None:
    view = dataclasses.replace(mesh_view(), weights={"inventory": {"v2": 100}})

    assert _weights(view, "inventory") == {"inventory_v1": 0, "inventory_v2": 100}


def test_a_split_summing_to_zero_falls_back_to_the_declared_one() -> None:
    # Envoy NACKs a route config whose weighted_clusters sum to 0.
    view = dataclasses.replace(mesh_view(), weights={"inventory": {"v7": 100}})

    assert _weights(view, "inventory") == {"inventory_v1": 90, "inventory_v2": 10}


def test_idempotent_calls_match_first_and_retry_more() -> None:
    idempotent, any_call = _service_host(mesh_view(), "inventory").routes

    assert idempotent.match.headers[0].name == IDEMPOTENT_HEADER
    assert idempotent.match.headers[0].present_match
    assert list(idempotent.request_headers_to_remove) == [IDEMPOTENT_HEADER]
    assert idempotent.route.retry_policy.retry_on == (
        "unavailable,reset,connect-failure,refused-stream"
    )
    assert idempotent.route.retry_policy.per_try_timeout.ToMilliseconds() == 2000
    assert not any_call.match.headers
    assert any_call.route.retry_policy.retry_on == "connect-failure,refused-stream"
    assert not any_call.route.retry_policy.HasField("per_try_timeout")


def test_service_policy_sets_attempts_and_timeout() -> None:
    view = mesh_view()
    order = _service_host(view, "order").routes[0].route
    inventory = _service_host(view, "inventory").routes[0].route

    assert order.retry_policy.num_retries.value == 1
    assert order.timeout.ToMilliseconds() == 3000
    assert inventory.timeout.ToMilliseconds() == view.default_timeout * 1000


def test_a_service_is_reached_by_name_with_or_without_port() -> None:
    assert list(_service_host(mesh_view(), "order").domains) == ["order", "order:*"]


# -- endpoints -------------------------------------------------------------------------


def _addresses(assignment: Any) -> list[str]:
    return [
        f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
        for group in assignment.endpoints
        for e in group.lb_endpoints
    ]


def test_an_assignment_holds_the_version_s_endpoints_sorted() -> None:
    v1, v2 = endpoints(mesh_view(), ["inventory_v1", "inventory_v2"])

    assert _addresses(v1) == ["127.0.0.1:15061", "127.0.0.1:15062"]
    assert _addresses(v2) == ["127.0.0.1:15063"]


@pytest.mark.parametrize("name", ["nosuch_v1", "inventory_v9", "inventory", ""])
def test_an_unknown_cluster_gets_an_empty_assignment(name: str) -> None:
    (assignment,) = endpoints(mesh_view(), [name])

    assert assignment.cluster_name == name
    assert len(assignment.endpoints) == 0


def test_an_unusable_address_is_left_out() -> None:
    broken = Endpoint("order", "order-2", "no-port-here", "v1")
    ipv6 = Endpoint("order", "order-3", "[::1]:15073", "v1")
    view = dataclasses.replace(mesh_view(), endpoints={"order": frozenset({broken, ipv6})})

    (assignment,) = endpoints(view, ["order_v1"])

    assert _addresses(assignment) == ["::1:15073"]


# -- runtime ---------------------------------------------------------------------------


def test_runtime_defaults_cover_every_runtime_key() -> None:
    defaults = runtime_defaults(mesh_view().services["order"])

    assert set(defaults) == set(RUNTIME_KEYS)
    assert defaults["fault.abort_grpc_status"] == 13
    assert defaults["ratelimit.enabled"] == 100


def test_the_inbound_filters_name_only_known_runtime_keys() -> None:
    text = json_format.MessageToJson(_inbound_manager())
    named = {key for key in RUNTIME_KEYS if f'"{key}"' in text}

    assert named == set(RUNTIME_KEYS)


# -- dispatcher and package ------------------------------------------------------------


def _names(messages: list[Any]) -> list[str]:
    return [message.name for message in messages]


def test_listeners_and_clusters_ignore_names() -> None:
    view, node = mesh_view(), sidecar_node()

    listener_names = _names(resources(view, node, LISTENER_TYPE, ["x"]))
    cluster_names = _names(resources(view, node, CLUSTER_TYPE, []))

    assert listener_names == [INBOUND, OUTBOUND]
    assert cluster_names == ["local_app", "inventory_v1", "inventory_v2", "order_v1"]


def test_routes_and_endpoints_are_the_named_ones() -> None:
    view, node = mesh_view(), sidecar_node()

    route_names = _names(resources(view, node, ROUTE_TYPE, [OUTBOUND, "nosuch"]))
    assignments: list[Any] = resources(view, node, ENDPOINT_TYPE, ["order_v1"])

    assert route_names == [OUTBOUND]
    assert [a.cluster_name for a in assignments] == ["order_v1"]


def test_an_unknown_type_url_is_refused() -> None:
    with pytest.raises(ValueError, match="no resources of type"):
        resources(mesh_view(), sidecar_node(), "type.googleapis.com/nosuch", [])


def test_the_output_is_deterministic() -> None:
    first = [
        m.SerializeToString(deterministic=True) for m in listeners(mesh_view(), sidecar_node())
    ]
    again = [
        m.SerializeToString(deterministic=True) for m in listeners(mesh_view(), sidecar_node())
    ]

    assert first == again


def test_the_package_exports_exactly_its_all() -> None:
    # (ruff's RUF022 keeps __all__ sorted.)
    public = {
        name
        for name, value in vars(mesh.envoy).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert public == set(mesh.envoy.__all__)
