"""mesh.problems: each Problem's status code and its google.rpc error details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mesh.problems import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Problem,
    Unavailable,
)


def roundtrip(problem: Problem) -> status_pb2.Status:
    """The status as a caller decodes it from grpc-status-details-bin."""
    return status_pb2.Status.FromString(problem.to_status().SerializeToString())


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        (InvalidArgument([FieldViolation("name", "required")]), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("product", "sku-1"), grpc.StatusCode.NOT_FOUND),
        (AlreadyExists("product", "sku-1"), grpc.StatusCode.ALREADY_EXISTS),
        (FailedPrecondition("no stock"), grpc.StatusCode.FAILED_PRECONDITION),
        (Unavailable("database down"), grpc.StatusCode.UNAVAILABLE),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Problem) else None,
)
def test_each_problem_has_its_code(problem: Problem, code: grpc.StatusCode) -> None:
    status = roundtrip(problem)

    assert problem.code is code
    assert status.code == code.value[0]
    assert status.message == problem.message
    assert isinstance(problem, Exception)


def test_invalid_argument_lists_field_violations_in_order() -> None:
    violations = [
        FieldViolation("items[1].quantity", "must be positive"),
        FieldViolation("customer_id", "required"),
        FieldViolation("items[0].product_id", "unknown"),
    ]

    (detail,) = roundtrip(InvalidArgument(violations)).details

    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        (v.field, v.description) for v in violations
    ]


def test_failed_precondition_carries_its_violations() -> None:
    violations = [
        PreconditionViolation("STOCK", "sku-1", "requested 5, available 2"),
        PreconditionViolation("STOCK", "sku-2", "requested 1, available 0"),
    ]

    (detail,) = roundtrip(FailedPrecondition("not enough stock", violations)).details

    failure = error_details_pb2.PreconditionFailure()
    assert detail.Unpack(failure)
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        (v.type, v.subject, v.description) for v in violations
    ]


def test_failed_precondition_without_violations_has_no_details() -> None:
    assert list(roundtrip(FailedPrecondition("closed")).details) == []


@pytest.mark.parametrize(
    "problem",
    [NotFound("product", "sku-1"), AlreadyExists("product", "sku-1", "different price")],
    ids=["NotFound", "AlreadyExists"],
)
def test_resource_problems_carry_resource_info(problem: Problem) -> None:
    (detail,) = roundtrip(problem).details

    info = error_details_pb2.ResourceInfo()
    assert detail.Unpack(info)
    assert (info.resource_type, info.resource_name) == ("product", "sku-1")
    assert not detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)


def test_unavailable_has_no_details() -> None:
    assert list(roundtrip(Unavailable("try later")).details) == []


def test_problem_fields_stay_readable() -> None:
    violations = [FieldViolation("name", "required")]

    problem = InvalidArgument(violations)

    assert problem.violations == tuple(violations)
    assert NotFound("order", "o-9").name == "o-9"
    assert NotFound("order", "o-9").resource_type == "order"
