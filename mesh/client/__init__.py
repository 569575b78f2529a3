"""The mesh client: a channel to any service by name, through a data plane chosen by
mesh.yaml; the proxyless one does client-side discovery, round-robin, breakers, retries."""

from mesh.client._breaker import FAILURE_CODES, Admission, EndpointBreaker
from mesh.client._channel import ServiceChannel, is_idempotent
from mesh.client._client import MeshClient
from mesh.client._dataplane import DataPlane, DirectDataPlane, StubChannel, data_plane

__all__ = [
    "FAILURE_CODES",
    "Admission",
    "DataPlane",
    "DirectDataPlane",
    "EndpointBreaker",
    "MeshClient",
    "ServiceChannel",
    "StubChannel",
    "data_plane",
    "is_idempotent",
]
