"""Domain failures a servicer raises, and the google.rpc.Status each becomes on the wire.

Servicers and domain code raise these plain exceptions; the mesh server interceptor
turns them into a gRPC status with google.rpc error details (BadRequest,
PreconditionFailure, ResourceInfo, ErrorInfo), the form grpc-gateway and grpcurl show
to callers. The code is chosen here, once, because clients key retries on it.

A status travels in HTTP/2 trailers, which gRPC clients refuse beyond 16 KiB (and may
refuse beyond 8 KiB), so what a status says is bounded here, whatever the request held:
text quoted from a request is cut to `MAX_QUOTED` characters with an ellipsis, a message
to `MAX_MESSAGE`, and a status lists at most `MAX_VIOLATIONS` violations (the message
names the first few and says how many more there are).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "DEPENDENCY_FAILED",
    "ERROR_DOMAIN",
    "INJECTED_FAULT",
    "MALFORMED_REQUEST",
    "MAX_MESSAGE",
    "MAX_QUOTED",
    "MAX_VIOLATIONS",
    "STATUS_DETAILS_KEY",
    "Aborted",
    "AlreadyExists",
    "DependencyFailed",
    "FailedPrecondition",
    "FieldViolation",
    "InjectedFault",
    "InvalidArgument",
    "MalformedRequest",
    "NotFound",
    "PreconditionViolation",
    "Problem",
    "Unauthenticated",
    "Unavailable",
    "bounded",
    "error_reason",
    "quoted",
]

MAX_QUOTED = 128
"""Characters of any one value (an id, a field path, a description) a status repeats."""
MAX_MESSAGE = 512
"""Characters of a status message."""
MAX_VIOLATIONS = 10
"""Violations one status lists; the message says how many more there were."""
_LISTED_IN_MESSAGE = 5

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer that carries a status's google.rpc.Status, details included."""

ERROR_DOMAIN = "shopmesh"
"""The google.rpc.ErrorInfo domain of the reasons below."""
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"
"""ErrorInfo reason: the instance is healthy, a service it called failed. Callers
neither retry it nor count it against the instance (mesh.client)."""
MALFORMED_REQUEST = "MALFORMED_REQUEST"
"""ErrorInfo reason: the request's bytes are not the method's request message."""
INJECTED_FAULT = "INJECTED_FAULT"
"""ErrorInfo reason: the instance failed the call on purpose (mesh.yaml's faults or
`meshctl fault`), for a demo or a test."""


def bounded(text: str, limit: int = MAX_QUOTED) -> str:
    """`text`, cut to `limit` characters with an ellipsis if longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(value: str) -> str:
    """`value` as a status quotes it: bounded, then repr'd (control characters escaped)."""
    return repr(bounded(value))


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is a path such as "items[1].quantity"."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition, e.g. type="STOCK", subject="sku-1"."""

    type: str
    subject: str
    description: str


class Problem(Exception):
    """Base: a failure with a gRPC status code and optional error details. The message
    is kept to MAX_MESSAGE characters."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        message = bounded(message, MAX_MESSAGE)
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.extend(self.details())
        return status


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _summary(parts: Sequence[str]) -> str:
    """The first few of `parts`, and how many more there are."""
    shown = "; ".join(parts[:_LISTED_IN_MESSAGE])
    more = len(parts) - _LISTED_IN_MESSAGE
    return f"{shown}; and {more} more" if more > 0 else shown


class InvalidArgument(Problem):
    """The request is malformed; every bad field is listed (up to MAX_VIOLATIONS)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        fields = _summary([f"{bounded(v.field)}: {bounded(v.description)}" for v in violations])
        super().__init__(f"invalid request: {fields}")

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=bounded(v.field), description=bounded(v.description)
                )
                for v in self.violations[:MAX_VIOLATIONS]
            ]
        )
        return [_pack(bad)]


class _ResourceProblem(Problem):
    def __init__(self, resource_type: str, name: str, message: str) -> None:
        self.resource_type = resource_type
        self.name = name
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type, resource_name=bounded(self.name)
        )
        return [_pack(info)]


class NotFound(_ResourceProblem):
    """No `resource_type` called `name` exists."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(resource_type, name, f"{resource_type} {quoted(name)} not found")


class AlreadyExists(_ResourceProblem):
    """A `resource_type` called `name` exists already (and differs from the request)."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, resource_type: str, name: str, why: str = "") -> None:
        message = f"{resource_type} {quoted(name)} already exists" + (f": {why}" if why else "")
        super().__init__(resource_type, name, message)


class FailedPrecondition(Problem):
    """The system is not in a state to do this; retrying unchanged will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, violations: Sequence[PreconditionViolation] = ()) -> None:
        self.violations = tuple(violations)
        if len(self.violations) > MAX_VIOLATIONS:
            message += f" ({len(self.violations) - MAX_VIOLATIONS} more not listed)"
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=bounded(v.type),
                    subject=bounded(v.subject),
                    description=bounded(v.description),
                )
                for v in self.violations[:MAX_VIOLATIONS]
            ]
        )
        return [_pack(failure)]


class Aborted(Problem):
    """A concurrent operation got in the way; the caller may retry the whole request."""

    code = grpc.StatusCode.ABORTED


class Unavailable(Problem):
    """A dependency is down; the caller may retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(Problem):
    """The caller is known, and may not do this (beyond what the authz table checks:
    another user's data, a method for admin only); the message says what."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(Problem):
    """The call needs an end user (a token checked at the edge) and has none."""

    code = grpc.StatusCode.UNAUTHENTICATED


class _Reasoned(Problem):
    """A problem whose google.rpc.ErrorInfo names its `reason` for programs."""

    reason: str = ""

    def __init__(self, message: str, **metadata: str) -> None:
        self.metadata = metadata
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason,
            domain=ERROR_DOMAIN,
            metadata={key: bounded(value) for key, value in self.metadata.items()},
        )
        return [_pack(info)]


class DependencyFailed(_Reasoned):
    """A service this instance called failed after the mesh client's own retries.

    It keeps the dependency's code (UNAVAILABLE, DEADLINE_EXCEEDED), so people see what
    happened, and carries ErrorInfo reason DEPENDENCY_FAILED, so that callers retry at
    one level only and do not blame this instance's breaker for another's failure.
    """

    reason = DEPENDENCY_FAILED

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        super().__init__(f"a dependency failed: {bounded(details, 256)}", code=code.name)


class MalformedRequest(_Reasoned):
    """The request's bytes are not a `message_type` (not protobuf, or a string field that
    is not UTF-8): INVALID_ARGUMENT, without echoing the bytes."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = MALFORMED_REQUEST

    def __init__(self, message_type: str) -> None:
        super().__init__(
            f"the request is not a valid {message_type}: its bytes do not decode"
            " as that message, or one of its strings is not UTF-8",
            message_type=message_type,
        )


class InjectedFault(_Reasoned):
    """A call failed on purpose, with the status its fault names (metadata `method`:
    "pkg.Service/Method"), so that callers and tests can tell it from a real failure."""

    reason = INJECTED_FAULT

    def __init__(self, code: grpc.StatusCode, method: str, message: str) -> None:
        self.code = code
        self.method = method
        super().__init__(message, method=method)


def error_reason(status: status_pb2.Status) -> str | None:
    """The reason of the first ShopMesh ErrorInfo in `status`'s details, or None."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return str(info.reason)
    return None
