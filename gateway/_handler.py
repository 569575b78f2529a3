"""The edge's request handler: an HTTP request in, a gRPC call out, its answer back as
JSON. Everything it serves comes from the descriptor set's google.api.http bindings;
nothing here names a shop service.

Per request: route (404, 405, 400 for a bad path value), then the token where the route
needs one (401), then the request message (400), then the call with the request's
metadata and deadline, then the response or the error body with the status
grpc-gateway would send.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import message
from opentelemetry import context as otel_context
from opentelemetry import propagate

from gateway._descriptors import ApiSurface, RpcMethod
from gateway._errors import EdgeError, error_body, http_status, status_details
from gateway._http import Request, Response, StreamingResponse
from gateway._router import MethodNotAllowed, NoRoute, Router
from gateway._template import BadPathValue
from gateway._transcode import Transcoding
from mesh.config import USER_METADATA_KEY

__all__ = ["SUBJECT_KEY", "Edge", "EdgeOptions", "parse_grpc_timeout"]

log = logging.getLogger("gateway")

SUBJECT_KEY = USER_METADATA_KEY
"""Metadata key of the token's verified subject; services trust it only from the
edge's own identity, and the edge never passes a client's own value on."""

Channels = Callable[[str], Any]
"""The channel (a mesh client's, or a plain grpc.aio one) to a gRPC service, by its
full name ("shop.order.v1.OrderService")."""
Authenticate = Callable[[RpcMethod, Request], Awaitable[str | None]]
"""The verified subject of a request's token, None when it has none and the method
takes calls without one; raises EdgeError (401) for a token it refuses."""

_JSON = "application/json"
_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"
_METADATA_PREFIX = "grpc-metadata-"
_PASSED_HEADERS = ("authorization", "x-request-id")
_TRACE_HEADERS = ("traceparent", "tracestate")
# Metadata a client may not set through Grpc-Metadata-*: gRPC's own, the mesh's.
_RESERVED = ("grpc-", ":", "x-forwarded-client-cert", SUBJECT_KEY, "host", "te", "content-type")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_grpc_timeout(text: str) -> float:
    """Seconds of a gRPC timeout header ("5S", "250m"); raises ValueError if malformed."""
    digits, unit = text[:-1], text[-1:]
    if not (0 < len(digits) <= 8 and digits.isdigit()) or unit not in _TIMEOUT_UNITS:
        raise ValueError(
            f"malformed Grpc-Timeout {text[:20]!r}: want 1-8 digits and H, M, S, m, u or n"
        )
    return int(digits) * _TIMEOUT_UNITS[unit]


@dataclass(frozen=True)
class EdgeOptions:
    default_timeout: float = 10.0
    """Deadline of a call whose request sends no Grpc-Timeout."""
    max_timeout: float = 60.0
    """Longest deadline a request may ask for."""
    use_proto_names: bool = False
    """Answer with the protos' field names instead of lowerCamelCase."""
    propagate_trace: bool = False
    """Continue the request's W3C trace as the current OpenTelemetry context (the mesh
    client's interceptor then starts the call's span under it); otherwise traceparent
    and tracestate are passed on as metadata as they came."""


@dataclass
class _Route:
    method: RpcMethod
    transcoding: Transcoding
    callable: Any = field(default=None, repr=False)


class Edge:
    """HTTP/JSON in front of every HTTP-bound method of `surface`."""

    def __init__(
        self,
        surface: ApiSurface,
        channels: Channels,
        *,
        options: EdgeOptions = EdgeOptions(),
        authenticate: Authenticate | None = None,
    ) -> None:
        self.surface = surface
        self._channels = channels
        self._options = options
        self._authenticate = authenticate
        routes = []
        for method, binding in surface.bound:
            if method.client_streaming:
                log.info("%s streams requests: not served over HTTP", method.full_name)
                continue
            transcoding = Transcoding.of(
                surface, method, binding, use_proto_names=options.use_proto_names
            )
            routes.append((binding.verb, binding.template, _Route(method, transcoding)))
        self._router: Router[_Route] = Router(routes)

    async def handle(self, request: Request) -> Response | StreamingResponse:
        """The answer to one request; never raises for a request's own fault."""
        try:
            return await self._serve(request)
        except EdgeError as error:
            return Response(error.status, [("content-type", _JSON), *error.headers], error.body())

    async def _serve(self, request: Request) -> Response | StreamingResponse:
        route, variables = self._route(request)
        subject = None
        if self._authenticate is not None:
            subject = await self._authenticate(route.method, request)
        message_in = route.transcoding.request(variables, request.query, request.body)
        metadata = _metadata(
            request.headers, subject, propagate_raw=not self._options.propagate_trace
        )
        timeout = self._timeout(request.headers)
        token = None
        if self._options.propagate_trace:
            token = otel_context.attach(propagate.extract(request.headers))
        try:
            if route.method.server_streaming:
                return await self._stream(route, message_in, metadata, timeout, request)
            return await self._unary(route, message_in, metadata, timeout)
        finally:
            if token is not None:
                otel_context.detach(token)

    def _route(self, request: Request) -> tuple[_Route, Mapping[str, str]]:
        try:
            match = self._router.match(request.method, request.path)
        except NoRoute:
            raise EdgeError(
                grpc.StatusCode.NOT_FOUND, f"no route for {request.method} {_short(request.path)}"
            ) from None
        except MethodNotAllowed as error:
            raise EdgeError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{_short(request.path)} does not take {request.method}",
                status=405,
                headers=[("allow", ", ".join(error.allowed))],
            ) from None
        except BadPathValue as error:
            raise EdgeError.bad_request(str(error)) from None
        return match.value, match.variables

    def _timeout(self, headers: Mapping[str, str]) -> float:
        raw = headers.get("grpc-timeout")
        if raw is None:
            return self._options.default_timeout
        try:
            return min(parse_grpc_timeout(raw.strip()), self._options.max_timeout)
        except ValueError as error:
            raise EdgeError.bad_request(str(error), "Grpc-Timeout") from None

    def _callable(self, route: _Route) -> Any:
        if route.callable is None:
            channel = self._channels(route.method.service)
            shape = channel.unary_stream if route.method.server_streaming else channel.unary_unary
            route.callable = shape(
                route.method.path,
                request_serializer=_serialize,
                response_deserializer=route.transcoding.response_class.FromString,
            )
        return route.callable

    async def _unary(
        self,
        route: _Route,
        request: message.Message,
        metadata: list[tuple[str, str]],
        timeout: float,
    ) -> Response:
        call = self._callable(route)(request, timeout=timeout, metadata=metadata)
        try:
            answer = await call
            initial = await call.initial_metadata()
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            return _rpc_error(error)
        headers = [("content-type", _JSON), *_response_headers(initial, trailing)]
        return Response(200, headers, route.transcoding.response_json(answer))

    async def _stream(
        self,
        route: _Route,
        request: message.Message,
        metadata: list[tuple[str, str]],
        timeout: float,
        http_request: Request,
    ) -> Response | StreamingResponse:
        sse = _SSE in http_request.headers.get("accept", "")
        call = self._callable(route)(request, timeout=timeout, metadata=metadata)
        messages = call.__aiter__()
        try:  # the status line waits for the first message: an early error is an HTTP error
            first = await messages.__anext__()
        except StopAsyncIteration:
            first = None
        except grpc.aio.AioRpcError as error:
            return _rpc_error(error)
        # A mesh client's stream is a plain async iterator: no metadata to pass on.
        initial = await call.initial_metadata() if hasattr(call, "initial_metadata") else None
        headers = [
            ("content-type", _SSE if sse else _NDJSON),
            ("cache-control", "no-cache"),
            *_response_headers(initial, None),
        ]
        return StreamingResponse(
            200, headers, _frames(route.transcoding, call, messages, first, sse)
        )


async def _frames(
    transcoding: Transcoding, call: Any, messages: AsyncIterator[Any], first: Any, sse: bool
) -> AsyncIterator[bytes]:
    """Each message as a line of NDJSON ({"result": ...}) or an SSE event; an error
    mid-stream ends the stream with {"error": <Status>} (SSE event `error`)."""
    try:
        if first is not None:
            yield _frame(b'{"result":' + transcoding.response_json(first) + b"}", sse)
            async for answer in messages:
                yield _frame(b'{"result":' + transcoding.response_json(answer) + b"}", sse)
    except grpc.aio.AioRpcError as error:
        body = error_body(
            error.code(), error.details() or "", status_details(error.trailing_metadata())
        )
        yield _frame(b'{"error":' + body + b"}", sse, event="error")
    finally:
        if hasattr(call, "cancel"):
            call.cancel()
        elif hasattr(messages, "aclose"):
            await messages.aclose()


def _frame(payload: bytes, sse: bool, event: str = "") -> bytes:
    if not sse:
        return payload + b"\n"
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + payload + b"\n\n"


def _serialize(request: message.Message) -> bytes:
    return request.SerializeToString()


def _metadata(
    headers: Mapping[str, str], subject: str | None, *, propagate_raw: bool
) -> list[tuple[str, str]]:
    metadata = [(name, headers[name]) for name in _PASSED_HEADERS if name in headers]
    if propagate_raw:
        metadata += [(name, headers[name]) for name in _TRACE_HEADERS if name in headers]
    for name, value in headers.items():
        if name.startswith(_METADATA_PREFIX):
            key = name[len(_METADATA_PREFIX) :]
            if key and not key.startswith(_RESERVED) and not key.endswith("-bin"):
                metadata.append((key, value))
    if subject is not None:
        metadata.append((SUBJECT_KEY, subject))
    return metadata


def _response_headers(
    initial: Iterable[tuple[str, str | bytes]] | None,
    trailing: Iterable[tuple[str, str | bytes]] | None,
) -> list[tuple[str, str]]:
    headers = []
    for prefix, pairs in (("grpc-metadata-", initial), ("grpc-trailer-", trailing)):
        for key, value in pairs or ():
            if isinstance(value, str) and not key.startswith(("grpc-", ":")):
                headers.append((prefix + key, value))
    return headers


def _rpc_error(error: grpc.aio.AioRpcError) -> Response:
    code = error.code()
    trailing = error.trailing_metadata()
    body = error_body(code, error.details() or "", status_details(trailing))
    headers = [("content-type", _JSON), *_response_headers(error.initial_metadata(), trailing)]
    return Response(http_status(code), headers, body)


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:199] + "…"
