"""What a failed call says: about the endpoint (for its breaker) and about retrying.

One caller's bad request must not open a breaker for everybody, and a failure must be
retried at one level of a call chain only. So a failure counts against the endpoint
only if it says the endpoint is unhealthy:
- codes a request causes (INVALID_ARGUMENT, NOT_FOUND, ...) are answers, never faults;
- DependencyFailed (a status with ErrorInfo reason DEPENDENCY_FAILED) is an answer from
  a healthy instance whose dependency failed after that instance's own retries: it is
  neither retried nor counted;
- RESOURCE_EXHAUSTED counts only when the server itself says so, with google.rpc details:
  gRPC's own size limits (metadata, messages, on either side) raise it without any, and
  they are caused by the request or its answer, not by the endpoint's health;
- DEADLINE_EXCEEDED counts only when the attempt had a fair chance (at least the
  per-try timeout): one cut short by the caller's own deadline says nothing.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from mesh.client._breaker import FAILURE_CODES
from mesh.problems import DEPENDENCY_FAILED, STATUS_DETAILS_KEY, error_reason

__all__ = ["health_code", "is_dependency_failure"]


def _details(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status a server attached to its failure, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def is_dependency_failure(error: grpc.aio.AioRpcError) -> bool:
    """Whether the instance answered that a service it called failed (DependencyFailed)."""
    details = _details(error)
    return details is not None and error_reason(details) == DEPENDENCY_FAILED


def health_code(error: grpc.aio.AioRpcError, *, fair_chance: bool) -> grpc.StatusCode:
    """The failure as evidence about the endpoint, for its breaker: its code if it says
    the endpoint is unhealthy, else OK (the endpoint answered). `fair_chance`: the
    attempt had at least the per-try timeout to answer."""
    code = error.code()
    if code not in FAILURE_CODES:
        return code
    healthy = (
        (code is grpc.StatusCode.RESOURCE_EXHAUSTED and _details(error) is None)
        or (code is grpc.StatusCode.DEADLINE_EXCEEDED and not fair_chance)
        or is_dependency_failure(error)
    )
    return grpc.StatusCode.OK if healthy else code
