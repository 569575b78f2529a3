"""bench.sidecar_variants: the experiments edit what they say and nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from bench.sidecar_variants import edit_clusters, edit_listeners, parse
from mesh.envoy._clusters import clusters
from mesh.envoy._common import HTTP_PROTOCOL_OPTIONS
from mesh.envoy._listeners import listeners
from tests.unit.mesh.envoy.fixtures import mesh_view, sidecar_node


def _managers(variants: frozenset[str]) -> list[Any]:
    edited = edit_listeners(listeners(mesh_view(), sidecar_node()), variants)
    result = []
    for listener in edited:
        manager = hcm_pb2.HttpConnectionManager()
        listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
        result.append(manager)
    return result


def _filter(manager: Any, name: str, message: Any) -> Any:
    (found,) = [f for f in manager.http_filters if f.name == name]
    found.typed_config.Unpack(message)
    return message


def test_no_variant_leaves_the_listeners_as_generated() -> None:
    generated = listeners(mesh_view(), sidecar_node())
    assert edit_listeners(listeners(mesh_view(), sidecar_node()), frozenset()) == generated


def test_router_only_keeps_the_router_alone() -> None:
    for manager in _managers(frozenset({"router-only"})):
        assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


def test_no_upstream_stats_keeps_per_method_stats() -> None:
    inbound, _ = _managers(frozenset({"no-upstream-stats"}))
    stats = _filter(inbound, "envoy.filters.http.grpc_stats", grpc_stats_pb2.FilterConfig())
    assert not stats.enable_upstream_stats
    assert stats.stats_for_all_methods.value
    assert len(inbound.http_filters) == 5


def test_request_ids_dynamic_stats_and_windows() -> None:
    variants = frozenset({"no-request-id", "no-dynamic-stats", "big-windows"})
    for manager in _managers(variants):
        assert manager.generate_request_id.value is False
        assert manager.http2_protocol_options.initial_stream_window_size.value == 16 << 20
        router = _filter(manager, "envoy.filters.http.router", router_pb2.Router())
        assert router.dynamic_stats.value is False
    for cluster in edit_clusters(clusters(mesh_view(), sidecar_node()), variants):
        options = http_protocol_options_pb2.HttpProtocolOptions()
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
        http2 = options.explicit_http_config.http2_protocol_options
        assert http2.initial_connection_window_size.value == 64 << 20


def test_unknown_variant_is_refused() -> None:
    assert parse("unpinned, router-only") == ("unpinned", "router-only")
    with pytest.raises(ValueError, match="nope"):
        parse("nope")
