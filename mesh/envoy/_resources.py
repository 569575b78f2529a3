"""The xDS type URLs, and which generator answers a request for each."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from mesh.envoy._clusters import clusters
from mesh.envoy._endpoints import endpoints
from mesh.envoy._listeners import listeners
from mesh.envoy._model import MeshView, SidecarNode
from mesh.envoy._routes import routes

__all__ = ["CLUSTER_TYPE", "ENDPOINT_TYPE", "LISTENER_TYPE", "ROUTE_TYPE", "resources"]

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def resources(
    view: MeshView, node: SidecarNode, type_url: str, names: Sequence[str]
) -> list[Message]:
    """The resources of `type_url` that `node` gets. Listeners and clusters are always
    all of them (`names` is ignored); route configs and endpoints only those named, as
    xDS asks (an unknown endpoint name gets an empty assignment, an unknown route
    config nothing). Raises ValueError for any other type URL."""
    if type_url == LISTENER_TYPE:
        return listeners(view, node)
    if type_url == CLUSTER_TYPE:
        return clusters(view, node)
    if type_url == ROUTE_TYPE:
        wanted = set(names)
        return [config for config in routes(view, node) if config.name in wanted]
    if type_url == ENDPOINT_TYPE:
        return endpoints(view, names)
    raise ValueError(f"no resources of type {type_url[:200]!r}")
