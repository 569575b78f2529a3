"""Profile's own failures, beside the shared ones of mesh.problems: the mesh server
interceptor turns them into statuses like any other Problem."""

from __future__ import annotations

import grpc

from mesh.errors import BrokerUnavailable
from mesh.problems import DependencyFailed, Problem

__all__ = ["AdminOnly", "broker_failed"]


class AdminOnly(Problem):
    """PERMISSION_DENIED: the method is for the admin identity, and another called it.
    (mesh.yaml's authz table lets only admin reach it; this holds even if the table
    is widened.)"""

    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} is for the admin identity only")


def broker_failed(error: BrokerUnavailable) -> DependencyFailed:
    """UNAVAILABLE for a call that needed the event broker, which did not answer. As a
    DependencyFailed, callers' mesh clients neither retry it nor hold it against this
    instance's breaker: the instance is healthy, the broker is away."""
    return DependencyFailed(grpc.StatusCode.UNAVAILABLE, f"the event broker: {error}")
