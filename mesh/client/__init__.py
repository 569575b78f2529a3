"""The proxyless data plane: client-side discovery, round-robin, breakers, retries."""

from mesh.client._breaker import FAILURE_CODES, Admission, EndpointBreaker
from mesh.client._channel import ServiceChannel, is_idempotent
from mesh.client._client import MeshClient

__all__ = [
    "FAILURE_CODES",
    "Admission",
    "EndpointBreaker",
    "MeshClient",
    "ServiceChannel",
    "is_idempotent",
]
