"""Everything the edge serves over HTTP, in the order a request meets it: CORS
preflights, the per-address rate limit, the built-in pages (the OpenAPI document,
/docs, /healthz), then the transcoded API; every answer gets the security headers and,
for an allowed origin, CORS headers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import grpc
import orjson

from gateway._docs import docs_asset
from gateway._errors import EdgeError
from gateway._handler import Edge
from gateway._http import Request, Response, StreamingResponse
from gateway._protect import (
    DOCS_CSP,
    CorsPolicy,
    RateLimiter,
    retry_after_header,
    security_headers,
)

__all__ = ["Site", "SiteOptions"]

OPENAPI_PATH = "/openapi.json"
_JSON = "application/json"
_SERVER_ERRORS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    414: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC code an HTTP server refusal's body carries."""


@dataclass(frozen=True)
class SiteOptions:
    cors: CorsPolicy | None = None
    per_address: RateLimiter | None = None
    tls: bool = False
    docs: bool = True


class Site:
    """The edge's whole HTTP surface; `handle` is the HTTP server's handler."""

    def __init__(self, edge: Edge, openapi: Mapping[str, object], options: SiteOptions) -> None:
        self._edge = edge
        self._openapi = orjson.dumps(openapi, option=orjson.OPT_SORT_KEYS)
        self._options = options
        self._api_headers = security_headers(tls=options.tls, no_store=True)
        self._page_headers = tuple(
            (k, DOCS_CSP if k == "content-security-policy" else v)
            for k, v in security_headers(tls=options.tls, no_store=False)
        )

    async def handle(self, request: Request) -> Response | StreamingResponse:
        cors = self._options.cors
        if cors is not None and cors.is_preflight(request.method, request.headers):
            status, headers = cors.preflight(request.headers)
            return Response(status, [*headers, *self._api_headers])
        limited = self._rate_limited(request)
        if limited is not None:
            return self._finish(request, limited, self._api_headers)
        builtin = self._builtin(request)
        if builtin is not None:
            page, sent_with = builtin
            return self._finish(request, page, sent_with)
        return self._finish(request, await self._edge.handle(request), self._api_headers)

    def error_response(self, status: int, message: str) -> Response:
        """The HTTP server's own refusals (413, 408, 431...) in the edge's error body;
        the server's `error_responder`."""
        code = _SERVER_ERRORS.get(status, grpc.StatusCode.UNKNOWN)
        error = EdgeError(code, message, status=status)
        return Response(status, [("content-type", _JSON), *self._api_headers], error.body())

    def _rate_limited(self, request: Request) -> Response | None:
        limiter = self._options.per_address
        if limiter is None:
            return None
        wait = limiter.acquire(request.client)
        if wait <= 0:
            return None
        error = EdgeError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too many requests from this address",
            headers=[("retry-after", retry_after_header(wait))],
        )
        return Response(error.status, [("content-type", _JSON), *error.headers], error.body())

    def _builtin(self, request: Request) -> tuple[Response, tuple[tuple[str, str], ...]] | None:
        """A page of the edge's own, with the headers it is sent with."""
        if request.method not in ("GET", "HEAD"):
            return None
        if request.path == OPENAPI_PATH:
            return Response(200, [("content-type", _JSON)], self._openapi), self._api_headers
        if request.path == "/healthz":
            body = b'{"status":"SERVING"}'
            return Response(200, [("content-type", _JSON)], body), self._api_headers
        if self._options.docs and (request.path == "/docs" or request.path.startswith("/docs/")):
            asset = docs_asset(request.path, openapi_url=OPENAPI_PATH)
            if asset is None:
                return None
            body, content_type = asset
            return Response(200, [("content-type", content_type)], body), self._page_headers
        return None

    def _finish(
        self,
        request: Request,
        answer: Response | StreamingResponse,
        extra: tuple[tuple[str, str], ...],
    ) -> Response | StreamingResponse:
        headers = [*answer.headers, *extra]
        if self._options.cors is not None:
            headers += self._options.cors.response_headers(request.headers)
        return replace(answer, headers=headers)
