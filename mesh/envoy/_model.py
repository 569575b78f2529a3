"""What the Envoy config generators read: the mesh as the control plane sees it now
(`MeshView`) and the sidecar asking (`SidecarNode`), plus the names both sides share
(clusters, listeners, route configs, runtime keys).

Everything here is plain data; the generators are pure functions of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.config import AuthzRule, ClientPolicy, RetryPolicy, ServiceSpec
from mesh.identity import SpiffeId
from mesh.registry import Endpoint

__all__ = [
    "INBOUND",
    "LOCAL_APP_CLUSTER",
    "OUTBOUND",
    "RUNTIME_KEYS",
    "XDS_CLUSTER",
    "MeshView",
    "SidecarNode",
    "cluster_name",
    "weights_runtime_prefix",
]

INBOUND = "inbound"
"""Name of the inbound listener and of its route configuration."""
OUTBOUND = "outbound"
"""Name of the outbound listener (the app's Unix socket) and of its route configuration."""
LOCAL_APP_CLUSTER = "local_app"
"""The cluster of the sidecar's own app, on its Unix socket."""
XDS_CLUSTER = "xds"
"""The bootstrap's static cluster of the control plane."""

RUNTIME_KEYS = {
    "fault.delay_percent": "share of calls to this instance delayed (0-100)",
    "fault.delay_ms": "delay of a delayed call, in milliseconds",
    "fault.abort_percent": "share of calls to this instance aborted (0-100)",
    "fault.abort_grpc_status": "gRPC status of an aborted call (14: UNAVAILABLE)",
    "ratelimit.enabled": "share of calls the local rate limit sees (0-100)",
    "ratelimit.enforced": "share of over-limit calls refused, not only counted (0-100)",
}
"""The runtime keys every sidecar's static layer holds, so `/runtime` lists them and
`POST /runtime_modify?<key>=<n>` changes them. Weights add `weights.<service>.<cluster>`."""


def cluster_name(service: str, version: str) -> str:
    """The outbound cluster of one version of a service: `inventory_v1`. Service and
    version names have no '_' (config rule), so the name splits back unambiguously."""
    return f"{service}_{version}"


def weights_runtime_prefix(service: str) -> str:
    """The runtime prefix of a service's version weights: the key
    `weights.<service>.<cluster>` overrides that cluster's declared weight."""
    return f"weights.{service}"


@dataclass(frozen=True)
class SidecarNode:
    """One sidecar, as its bootstrap introduces it to the control plane (node id,
    node cluster and node metadata).

    The paths are the instance's own: the sidecar presents the instance's certificate
    inbound and upstream, so a caller's identity is the app's own.
    """

    node_id: str
    """The instance id."""
    service: str
    version: str
    inbound_host: str
    inbound_port: int
    """Where the inbound mTLS listener binds: the address the instance registers."""
    app_socket: str
    """Path of the app's Unix socket (0600): the local app cluster."""
    outbound_socket: str
    """Path of the Unix socket (0600) the app's mesh client calls through."""
    cert_chain: str
    private_key: str
    ca: str

    def metadata(self) -> dict[str, str]:
        """Node metadata for the bootstrap; `from_node` reads it back."""
        return {
            "service": self.service,
            "version": self.version,
            "inbound_host": self.inbound_host,
            "inbound_port": str(self.inbound_port),
            "app_socket": self.app_socket,
            "outbound_socket": self.outbound_socket,
            "cert_chain": self.cert_chain,
            "private_key": self.private_key,
            "ca": self.ca,
        }

    @classmethod
    def from_node(cls, node_id: str, metadata: Mapping[str, object]) -> SidecarNode:
        """The node a sidecar's requests describe; raises ValueError naming what is
        missing or malformed."""
        values: dict[str, str] = {}
        for key in (
            "service", "version", "inbound_host", "inbound_port", "app_socket",
            "outbound_socket", "cert_chain", "private_key", "ca",
        ):  # fmt: skip
            value = metadata.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"node {node_id!r}: metadata lacks {key!r}")
            values[key] = value
        try:
            port = int(values.pop("inbound_port"))
        except ValueError:
            raise ValueError(f"node {node_id!r}: inbound_port is not a number") from None
        if not node_id:
            raise ValueError("node has no id")
        return cls(node_id=node_id, inbound_port=port, **values)


@dataclass(frozen=True)
class MeshView:
    """The mesh at one moment: mesh.yaml's services, the endpoints etcd holds, and the
    live authz table and version weights (etcd's, else mesh.yaml's)."""

    trust_domain: str
    namespace: str
    services: Mapping[str, ServiceSpec]
    endpoints: Mapping[str, frozenset[Endpoint]] = field(default_factory=dict)
    """Registered instances by service (their addresses are their sidecars')."""
    authz: tuple[AuthzRule, ...] = ()
    weights: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Share of calls per version, by service; a service missing here gets its
    declared weights (`ServiceSpec.declared_weights`)."""
    default_timeout: float = ClientPolicy.timeout
    """Seconds: the route timeout of a service whose policy sets none (a caller's
    grpc-timeout header overrides it)."""
    connect_timeout: float = ClientPolicy.connect_timeout
    """Seconds a new upstream connection (TCP and TLS handshake) gets."""
    attempts: int = RetryPolicy.max_attempts
    """Attempts per call of a service whose policy sets none (client.retry's)."""
    per_try_timeout: float = RetryPolicy.per_try_timeout
    """Per-try timeout of a service whose policy sets none (client.retry's)."""

    def spiffe_id(self, name: str) -> str:
        return SpiffeId(self.trust_domain, self.namespace, name).uri

    def weights_of(self, service: str) -> dict[str, int]:
        """The live split of `service` over its versions (`versions_of`; missing ones:
        0), else the declared one."""
        live = self.weights.get(service)
        if live is None:
            return self.services[service].declared_weights()
        return {version: int(live.get(version, 0)) for version in self.versions_of(service)}

    def versions_of(self, service: str) -> tuple[str, ...]:
        """Every version that has a cluster: declared ones, then any registered ones."""
        declared = list(self.services[service].running_versions)
        seen = {e.version for e in self.endpoints.get(service, ())}
        return (*declared, *sorted(seen - set(declared)))
