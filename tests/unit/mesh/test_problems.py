"""mesh.problems: each Problem's status code and its google.rpc error details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mesh.problems import (
    DEPENDENCY_FAILED,
    MALFORMED_REQUEST,
    MAX_QUOTED,
    MAX_VIOLATIONS,
    Aborted,
    AlreadyExists,
    DependencyFailed,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    PreconditionViolation,
    Problem,
    Unavailable,
    error_reason,
)

HUGE = "x" * 20_000
TRAILERS_A_CLIENT_ALWAYS_TAKES = 8 * 1024  # grpc's soft limit; 16 KiB is the hard one


def trailer_bytes(problem: Problem) -> int:
    """About what the status costs in trailers: grpc-message plus the base64 details."""
    details = problem.to_status().SerializeToString()
    return len(problem.message.encode()) * 3 + len(details) * 4 // 3


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
        (Aborted("retry"), grpc.StatusCode.ABORTED),
        (MalformedRequest("pkg.Request"), grpc.StatusCode.INVALID_ARGUMENT),
        (DependencyFailed(grpc.StatusCode.UNAVAILABLE, "down"), grpc.StatusCode.UNAVAILABLE),
        (
            DependencyFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "slow"),
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ),
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


# -- bounded: one caller's huge input never makes a status too big to deliver -----------


@pytest.mark.parametrize(
    "problem",
    [
        NotFound("shop.product.v1.Product", HUGE),
        NotFound("shop.product.v1.Product", "💥" * 20_000),
        AlreadyExists("shop.product.v1.Product", HUGE, HUGE),
        InvalidArgument([FieldViolation(HUGE, HUGE)]),
        InvalidArgument([FieldViolation(f"items[{i}].product_id", HUGE) for i in range(5_000)]),
        FailedPrecondition(HUGE, [PreconditionViolation(HUGE, HUGE, HUGE)] * 5_000),
        Unavailable(HUGE),
        DependencyFailed(grpc.StatusCode.UNAVAILABLE, HUGE),
    ],
    ids=lambda problem: type(problem).__name__,
)
def test_a_status_stays_small_whatever_it_quotes(problem: Problem) -> None:
    assert trailer_bytes(problem) < TRAILERS_A_CLIENT_ALWAYS_TAKES


def test_a_quoted_value_is_cut_with_an_ellipsis() -> None:
    problem = NotFound("product", "sku-" + "9" * 500)

    (detail,) = roundtrip(problem).details
    info = error_details_pb2.ResourceInfo()
    detail.Unpack(info)

    assert len(info.resource_name) == MAX_QUOTED
    assert info.resource_name.endswith("…")
    assert "sku-999" in problem.message
    assert "…" in problem.message
    assert problem.name == "sku-" + "9" * 500  # the exception keeps what it was given


def test_many_violations_are_listed_up_to_the_bound_and_counted_in_the_message() -> None:
    violations = [FieldViolation(f"items[{i}].quantity", "must be at least 1") for i in range(30)]

    problem = InvalidArgument(violations)
    (detail,) = roundtrip(problem).details
    bad = error_details_pb2.BadRequest()
    detail.Unpack(bad)

    assert [v.field for v in bad.field_violations] == [v.field for v in violations[:MAX_VIOLATIONS]]
    assert problem.message.startswith("invalid request: items[0].quantity: must be at least 1;")
    assert problem.message.endswith("; and 25 more")
    assert len(violations) > MAX_VIOLATIONS
    assert problem.violations == tuple(violations)


def test_control_characters_in_a_quoted_value_are_escaped() -> None:
    assert "\n" not in NotFound("order", "ord-1\nFAKE LOG LINE").message


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        (
            DependencyFailed(grpc.StatusCode.UNAVAILABLE, "inventory: no endpoint"),
            DEPENDENCY_FAILED,
        ),
        (MalformedRequest("shop.order.v1.PlaceOrderRequest"), MALFORMED_REQUEST),
        (Unavailable("try later"), None),
        (NotFound("order", "o-1"), None),
    ],
    ids=["dependency", "malformed", "unavailable", "not-found"],
)
def test_a_reason_is_read_back_from_the_status(problem: Problem, reason: str | None) -> None:
    assert error_reason(roundtrip(problem)) == reason


def test_a_dependency_failure_keeps_the_dependencys_code_in_its_metadata() -> None:
    (detail,) = roundtrip(DependencyFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")).details
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    assert (info.domain, dict(info.metadata)) == ("shopmesh", {"code": "DEADLINE_EXCEEDED"})
