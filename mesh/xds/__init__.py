"""The xDS control plane: an ADS server (state of the world) that streams each sidecar
the resources built from the current mesh view."""

from mesh.xds._serving import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    AdsServer,
    Build,
    NodeStatus,
    TypeStatus,
    resources_version,
)

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "AdsServer",
    "Build",
    "NodeStatus",
    "TypeStatus",
    "resources_version",
]
