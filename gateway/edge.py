"""The edge as a mesh instance: `python -m gateway.edge --config mesh.yaml` (meshctl up
starts it as the service `edge`). The mesh runtime gives it what every instance has
(its identity's certificate, registration, health, metrics, a sidecar when
`dataplane: sidecar`); the edge adds its HTTP listener, whose URL it registers.

Calls go out through the runtime's mesh client as the `edge` identity, to the mesh
service a proto package names (`shop.order.v1` -> `order`) unless `upstreams` says
otherwise. Tokens are checked against the JWKS the auth service serves.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from gateway._bearer import MethodPatterns, bearer_authenticator
from gateway._descriptors import ApiSurface, DescriptorSetError, load_descriptor_set
from gateway._handler import Edge, EdgeOptions
from gateway._http import HttpLimits, HttpServer
from gateway._jwt import JwksUnavailable, TokenVerifier
from gateway._openapi import openapi_document
from gateway._protect import CorsPolicy, RateLimit, RateLimiter
from gateway._site import Site, SiteOptions
from mesh.codegen import DESCRIPTOR_SET
from mesh.errors import MeshError
from mesh.server import Runtime, run_service

__all__ = ["EdgeSettings", "main", "setup"]

_PACKAGE = re.compile(r"^[a-z][a-z0-9_]*\.([a-z][a-z0-9_]*)\.v\d+\.")


class Limit(BaseModel):
    """A token bucket: `rate` requests per second, bursts of up to `burst`."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class EdgeSettings(BaseModel):
    """Settings of the REST edge (`services.edge.settings` in mesh.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    http_port: int = Field(default=8080, ge=0, le=65535)
    """Instance n serves HTTP on http_port + n - 1 (0: any free port)."""
    descriptor_set: StrictStr = ""
    """The contracts it serves (a FileDescriptorSet), relative to mesh.yaml's folder;
    empty: the shop's own, generated/shop.binpb beside the generated modules."""
    require_token: tuple[StrictStr, ...] = ()
    """Methods that need a bearer token, as authz rules name them ("pkg.Service/Method",
    "pkg.Service/*", "*"); a token sent to any other method is checked too."""
    jwks_method: StrictStr = "shop.auth.v1.AuthService/GetJwks"
    """The method that serves the JWKS tokens are checked against."""
    token_issuer: StrictStr = "https://auth.shop.local"
    token_audience: StrictStr = "shopmesh"
    upstreams: Mapping[StrictStr, StrictStr] = {}
    """Mesh service of a gRPC service ("shop.order.v1.OrderService": "order"), where
    the package's second part does not name it."""
    cors_origins: tuple[StrictStr, ...] = ()
    """Origins (scheme://host[:port]) whose pages may call the API from a browser."""
    per_address: Limit | None = Limit(rate=100, burst=200)
    """Rate limit per client address (429 with Retry-After beyond it); null: none."""
    per_user: Limit | None = Limit(rate=50, burst=100)
    """Rate limit per verified user; null: none."""
    timeout: float = Field(default=10.0, gt=0)
    """Deadline of a call whose request sends no Grpc-Timeout (s)."""
    max_timeout: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1)
    """Larger request bodies get 413."""
    header_timeout: float = Field(default=10.0, gt=0)
    """A request's head must arrive within this (s), or it gets 408 and is closed."""
    request_timeout: float = Field(default=30.0, gt=0)
    """A request still unanswered after this (s) gets 504."""
    use_proto_names: bool = False
    """Answer with the protos' field names instead of lowerCamelCase."""


def mesh_service(service: str, upstreams: Mapping[str, str]) -> str:
    """The mesh service that serves a gRPC service, by `upstreams` or its package."""
    if service in upstreams:
        return upstreams[service]
    match = _PACKAGE.match(service)
    if match is None:
        raise MeshError(f"which mesh service serves {service}? name it in the edge's upstreams")
    return match.group(1)


async def setup(rt: Runtime) -> None:
    """Serve HTTP/JSON for every HTTP-bound method of the descriptor set."""
    settings: EdgeSettings = rt.settings.service_settings
    config = rt.settings.config
    path = config.root / settings.descriptor_set if settings.descriptor_set else _shop_set()
    try:
        surface = load_descriptor_set(path)
    except DescriptorSetError as error:
        raise MeshError(str(error)) from error
    surface = _declared_only(surface, config.services, settings.upstreams)
    try:
        site = _site(rt, surface, settings)
    except ValueError as error:  # a binding the router or the transcoder cannot serve
        raise MeshError(f"{path}: {error}") from error
    server = HttpServer(
        site.handle,
        limits=HttpLimits(
            max_body_bytes=settings.max_body_bytes,
            header_timeout=settings.header_timeout,
            request_timeout=settings.request_timeout,
        ),
        error_responder=site.error_response,
        server_header="shopmesh-edge",
    )
    port = settings.http_port + _instance_offset(rt) if settings.http_port else 0
    try:
        await server.start(config.host, port)
    except OSError as error:
        raise MeshError(f"cannot serve HTTP on {config.host}:{port}: {error.strerror}") from error
    rt.on_close(server.close)
    rt.metadata["url"] = server.url


def _site(rt: Runtime, surface: ApiSurface, settings: EdgeSettings) -> Site:
    channels: dict[str, Any] = {}

    def channel(service: str) -> Any:
        if service not in channels:
            channels[service] = rt.client.channel(mesh_service(service, settings.upstreams))
        return channels[service]

    requires_token = MethodPatterns(settings.require_token)
    verifier = TokenVerifier(
        _jwks_fetcher(surface, settings.jwks_method, channel),
        issuer=settings.token_issuer,
        audience=settings.token_audience,
    )
    rt.on_close(verifier.aclose)
    edge = Edge(
        surface,
        channel,
        options=EdgeOptions(
            default_timeout=settings.timeout,
            max_timeout=settings.max_timeout,
            use_proto_names=settings.use_proto_names,
            propagate_trace=True,
        ),
        authenticate=bearer_authenticator(
            verifier, requires_token, per_user=_limiter(settings.per_user)
        ),
    )
    document = openapi_document(
        surface,
        title="ShopMesh API",
        version=rt.version,
        requires_token=requires_token,
        use_proto_names=settings.use_proto_names,
    )
    cors = CorsPolicy(allowed_origins=settings.cors_origins) if settings.cors_origins else None
    return Site(edge, document, SiteOptions(cors=cors, per_address=_limiter(settings.per_address)))


def _declared_only(
    surface: ApiSurface, declared: Mapping[str, object], upstreams: Mapping[str, str]
) -> ApiSurface:
    """The surface without the gRPC services of mesh services mesh.yaml does not declare
    (a contract compiled ahead of its service): their routes would only ever be 503s."""

    def served(service: str) -> bool:
        try:
            return mesh_service(service, upstreams) in declared
        except MeshError:
            return False

    return dataclasses.replace(
        surface, methods=tuple(m for m in surface.methods if served(m.service))
    )


def _shop_set() -> Path:
    import shop  # generated/: the descriptor set lies beside its packages

    return Path(next(iter(shop.__path__))).parent / DESCRIPTOR_SET


def _instance_offset(rt: Runtime) -> int:
    """n - 1 for instance n, as its gRPC port tells (fixed ports only)."""
    spec = rt.settings.service
    return rt.settings.port - spec.port if spec.port and rt.settings.port else 0


def _limiter(limit: Limit | None) -> RateLimiter | None:
    return RateLimiter(RateLimit(rate=limit.rate, burst=limit.burst)) if limit else None


def _jwks_fetcher(surface: ApiSurface, method_name: str, channel: Any) -> Any:
    method = next((m for m in surface.methods if m.full_name == method_name), None)

    async def fetch() -> bytes:
        if method is None:
            raise JwksUnavailable(f"{method_name} is not in the descriptor set")
        call = channel(method.service).unary_unary(
            method.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=surface.message_class(method.output).FromString,
        )
        try:
            answer = await call(surface.message_class(method.input)(), timeout=5.0)
        except Exception as error:  # any failure to reach auth: the verifier keeps its cache
            raise JwksUnavailable(f"{method_name}: {error}") from error
        return json_format.MessageToJson(answer).encode()

    return fetch


def main() -> int:
    return run_service("edge", setup, settings=EdgeSettings)


if __name__ == "__main__":
    raise SystemExit(main())
