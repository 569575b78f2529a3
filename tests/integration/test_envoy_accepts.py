"""Real Envoy accepts what the generators produce: one `envoy --mode validate` run (about
a second) over the generated bootstrap, with every generated listener, route config,
cluster and endpoint assignment added as static resources.

Validate mode reads the certificate files but binds and dials nothing; serving traffic
through the sidecar is test_sidecar's job.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from mesh.envoy import MeshView, SidecarNode, bootstrap, runtime_defaults
from mesh.envoy._clusters import clusters
from mesh.envoy._endpoints import endpoints
from mesh.envoy._listeners import listeners
from mesh.envoy._routes import routes
from mesh.identity import ensure_certificates
from mesh.supervisor import find_binary
from tests.unit.mesh.envoy.fixtures import NAMESPACE, TRUST_DOMAIN, mesh_view, sidecar_node

pytestmark = pytest.mark.integration

_IDENTITIES = ["inventory", "order", "admin", "controlplane"]


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def _with_inline_routes(listener: Any, route_configs: dict[str, Any]) -> Any:
    """`listener` with its RDS reference replaced by the route config it names."""
    listener = type(listener).FromString(listener.SerializeToString())
    network_filter = listener.filter_chains[0].filters[0]
    manager = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(manager)
    manager.route_config.CopyFrom(route_configs[manager.rds.route_config_name])
    network_filter.typed_config.Pack(manager)
    return listener


def _as_static(cluster: Any, view: MeshView) -> Any:
    """An EDS `cluster` turned STATIC, holding its generated assignment."""
    if cluster.type != cluster_pb2.Cluster.EDS:
        return cluster
    cluster = type(cluster).FromString(cluster.SerializeToString())
    cluster.type = cluster_pb2.Cluster.STATIC
    cluster.ClearField("eds_cluster_config")
    cluster.load_assignment.CopyFrom(endpoints(view, [cluster.name])[0])
    return cluster


def _config(view: MeshView, node: SidecarNode) -> dict[str, Any]:
    config = bootstrap(
        node,
        xds_host="127.0.0.1",
        xds_port=15010,
        controlplane_spiffe=view.spiffe_id("controlplane"),
        admin_host="127.0.0.1",
        runtime=runtime_defaults(view.services[node.service]),
    )
    route_configs = {config.name: config for config in routes(view, node)}
    static = config["static_resources"]
    static["listeners"] = [
        _as_dict(_with_inline_routes(listener, route_configs)) for listener in listeners(view, node)
    ]
    static["clusters"] += [_as_dict(_as_static(cluster, view)) for cluster in clusters(view, node)]
    return config


def test_envoy_validates_the_bootstrap_and_every_resource(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ensure_certificates(certs, TRUST_DOMAIN, NAMESPACE, _IDENTITIES)
    config_file = tmp_path / "envoy.json"
    config_file.write_text(json.dumps(_config(mesh_view(), sidecar_node(certs, tmp_path))))

    result = subprocess.run(
        [find_binary("envoy"), "--mode", "validate", "-c", str(config_file), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
