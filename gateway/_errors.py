"""The edge's one gRPC -> HTTP error table, and the JSON error body every failure gets.

Statuses are grpc-gateway's (runtime/errors.go HTTPStatusFromCode), so clients written
against a grpc-gateway behave the same here. The body is google.rpc.Status in its proto3
JSON form, `{"code": <gRPC code>, "message": ..., "details": [...]}`, with the details a
service attached (BadRequest field violations, say) carried through from the
`grpc-status-details-bin` trailer.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

import grpc
import orjson
from google.protobuf import any_pb2, json_format, message
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "EdgeError",
    "error_body",
    "http_status",
    "status_details",
]

_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
_DETAILS_KEY = "grpc-status-details-bin"
_MAX_MESSAGE = 512  # characters of a message we pass on: errors never echo unbounded input
_MAX_DETAILS = 16


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status for a gRPC code, as grpc-gateway maps it."""
    return _HTTP_STATUS.get(code, 500)


class EdgeError(Exception):
    """A failure the edge answers itself (no route, bad JSON, no token...), with the gRPC
    code its body carries and the HTTP status it is sent with (the code's, unless the
    failure is HTTP's own: 405, 413, 415...)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: int | None = None,
        details: Sequence[message.Message] = (),
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else http_status(code)
        self.details = tuple(details)
        self.headers = tuple(headers)

    @classmethod
    def bad_request(cls, message: str, field: str = "") -> EdgeError:
        """INVALID_ARGUMENT (400), with a BadRequest field violation naming `field`."""
        details = []
        if field:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=_bounded(field, 200), description=_bounded(message)
            )
            details.append(error_details_pb2.BadRequest(field_violations=[violation]))
        return cls(grpc.StatusCode.INVALID_ARGUMENT, message, details=details)

    def body(self) -> bytes:
        return error_body(self.code, self.message, (_packed(d) for d in self.details))


def status_details(trailers: Iterable[tuple[str, str | bytes]] | None) -> list[any_pb2.Any]:
    """The details of the google.rpc.Status a service sent in its trailers, if any."""
    for key, value in trailers or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except message.DecodeError:
                return []
            return list(status.details[:_MAX_DETAILS])
    return []


def error_body(code: grpc.StatusCode, text: str, details: Iterable[any_pb2.Any] = ()) -> bytes:
    """google.rpc.Status as proto3 JSON. A detail of a type this process does not know
    is passed on as its type URL and base64 bytes, never dropped."""
    return orjson.dumps(
        {
            "code": code.value[0] if code in _HTTP_STATUS else code_pb2.UNKNOWN,
            "message": _bounded(text),
            "details": [_detail_json(detail) for detail in details],
        }
    )


def _detail_json(detail: any_pb2.Any) -> object:
    try:
        return json_format.MessageToDict(detail)
    except (TypeError, KeyError, json_format.Error):
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def _packed(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _bounded(text: str, limit: int = _MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
