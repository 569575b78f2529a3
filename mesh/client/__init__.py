"""The mesh client: a channel to any service by name, through a data plane chosen by
mesh.yaml; the proxyless one does client-side discovery, version weights, round-robin,
breakers, retries within a retry budget."""

from mesh.client._breaker import FAILURE_CODES, Admission, EndpointBreaker
from mesh.client._budget import RetryBudgetMeter
from mesh.client._channel import ServiceChannel, is_idempotent
from mesh.client._client import MeshClient
from mesh.client._dataplane import (
    DataPlane,
    DirectDataPlane,
    LiveWeights,
    StubChannel,
    data_plane,
    service_policy,
)
from mesh.client._sidecar import SidecarDataPlane
from mesh.client._weights import SmoothWeighted, WeightsOf, service_weights

__all__ = [
    "FAILURE_CODES",
    "Admission",
    "DataPlane",
    "DirectDataPlane",
    "EndpointBreaker",
    "LiveWeights",
    "MeshClient",
    "RetryBudgetMeter",
    "ServiceChannel",
    "SidecarDataPlane",
    "SmoothWeighted",
    "StubChannel",
    "WeightsOf",
    "data_plane",
    "is_idempotent",
    "service_policy",
    "service_weights",
]
