"""Sidecar Envoy configuration: the bootstrap, and the xDS resources each sidecar gets,
as pure functions of the mesh (`MeshView`) and the sidecar asking (`SidecarNode`).

One private module per resource kind (`_listeners`, `_routes`, `_clusters`,
`_endpoints`); `resources` answers an xDS request from them by type URL.
"""

from mesh.envoy._bootstrap import bootstrap, runtime_defaults
from mesh.envoy._model import (
    INBOUND,
    LOCAL_APP_CLUSTER,
    OUTBOUND,
    RUNTIME_KEYS,
    XDS_CLUSTER,
    MeshView,
    SidecarNode,
    cluster_name,
    weights_runtime_prefix,
)
from mesh.envoy._resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    resources,
)
from mesh.envoy._routes import IDEMPOTENT_HEADER

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "IDEMPOTENT_HEADER",
    "INBOUND",
    "LISTENER_TYPE",
    "LOCAL_APP_CLUSTER",
    "OUTBOUND",
    "ROUTE_TYPE",
    "RUNTIME_KEYS",
    "XDS_CLUSTER",
    "MeshView",
    "SidecarNode",
    "bootstrap",
    "cluster_name",
    "resources",
    "runtime_defaults",
    "weights_runtime_prefix",
]
