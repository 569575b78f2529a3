"""Domain failures a servicer raises, and the google.rpc.Status each becomes on the wire.

Servicers and domain code raise these plain exceptions; the mesh server interceptor
turns them into a gRPC status with google.rpc error details (BadRequest,
PreconditionFailure, ResourceInfo), the form grpc-gateway and grpcurl show to callers.
The code is chosen here, once, because clients key retries on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PreconditionViolation",
    "Problem",
    "Unavailable",
]


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
    """Base: a failure with a gRPC status code and optional error details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
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


class InvalidArgument(Problem):
    """The request is malformed; every bad field is listed."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        fields = ", ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {fields}")

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
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
            resource_type=self.resource_type, resource_name=self.name
        )
        return [_pack(info)]


class NotFound(_ResourceProblem):
    """No `resource_type` called `name` exists."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(resource_type, name, f"{resource_type} {name!r} not found")


class AlreadyExists(_ResourceProblem):
    """A `resource_type` called `name` exists already (and differs from the request)."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, resource_type: str, name: str, why: str = "") -> None:
        message = f"{resource_type} {name!r} already exists" + (f": {why}" if why else "")
        super().__init__(resource_type, name, message)


class FailedPrecondition(Problem):
    """The system is not in a state to do this; retrying unchanged will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, violations: Sequence[PreconditionViolation] = ()) -> None:
        self.violations = tuple(violations)
        super().__init__(message)

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in self.violations
            ]
        )
        return [_pack(failure)]


class Unavailable(Problem):
    """A dependency is down; the caller may retry later."""

    code = grpc.StatusCode.UNAVAILABLE
