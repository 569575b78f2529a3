"""The edge's protections, each sent the request it exists to refuse: the status and
body it answers with, that nothing reached the service, and that another client is
served meanwhile. The edge runs in this process in front of the echo server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway._bearer import MethodPatterns, bearer_authenticator
from gateway._descriptors import load_descriptor_set
from gateway._handler import Edge
from gateway._http import HttpLimits, HttpServer
from gateway._jwt import TokenVerifier
from gateway._openapi import openapi_document
from gateway._protect import CorsPolicy, RateLimit, RateLimiter
from gateway._site import Site, SiteOptions
from tests.harness.echo import EchoUpstream, compile_protos, echo_server
from tests.harness.http import fetch

ISSUER, AUDIENCE, KID = "https://auth.test", "shop-test", "key-1"
ORIGIN = "https://shop.example"


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_protos(tmp_path_factory.mktemp("protos"))


@pytest.fixture(scope="module")
async def upstream(descriptor_set: Path) -> AsyncIterator[EchoUpstream]:
    async with echo_server(descriptor_set) as echo:
        yield echo


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(key: rsa.RSAPrivateKey, subject: str, *, lifetime: int = 600) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "nbf": now - 5,
              "exp": now + lifetime}  # fmt: skip
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


@contextlib.asynccontextmanager
async def running_edge(
    descriptor_set: Path,
    upstream: EchoUpstream,
    key: rsa.RSAPrivateKey,
    *,
    limits: HttpLimits | None = None,
    per_address: RateLimit | None = None,
    per_user: RateLimit | None = None,
) -> AsyncIterator[str]:
    surface = load_descriptor_set(descriptor_set)
    channel = grpc.aio.insecure_channel(upstream.address)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]}).encode()

    async def fetch_jwks() -> bytes:
        return jwks

    verifier = TokenVerifier(fetch_jwks, issuer=ISSUER, audience=AUDIENCE)
    authenticate = bearer_authenticator(
        verifier,
        MethodPatterns(["gwtest.v1.Library/Fail", "gwtest.v1.Library/CancelBook"]),
        per_user=RateLimiter(per_user) if per_user else None,
    )
    edge = Edge(surface, lambda _: channel, authenticate=authenticate)
    site = Site(
        edge,
        openapi_document(surface, title="t", version="1"),
        SiteOptions(
            cors=CorsPolicy(allowed_origins=(ORIGIN,)),
            per_address=RateLimiter(per_address) if per_address else None,
        ),
    )
    server = HttpServer(
        site.handle, limits=limits or HttpLimits(), error_responder=site.error_response
    )
    port = await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.close()
        await channel.close()


@pytest.fixture(scope="module")
async def edge(
    descriptor_set: Path, upstream: EchoUpstream, signing_key: rsa.RSAPrivateKey
) -> AsyncIterator[str]:
    limits = HttpLimits(max_body_bytes=4096, header_timeout=0.5, request_timeout=0.5)
    async with running_edge(descriptor_set, upstream, signing_key, limits=limits) as url:
        yield url


@contextlib.contextmanager
def reaches_nothing(upstream: EchoUpstream) -> Any:
    before = len(upstream.calls)
    yield
    assert upstream.calls[before:] == []


def assert_error(answer: Any, status: int, code: int) -> dict[str, Any]:
    assert answer.status == status, answer.body
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


# -- rate limits --------------------------------------------------------------------


async def test_an_address_over_its_rate_gets_429_and_others_go_on(
    descriptor_set: Path, upstream: EchoUpstream, signing_key: rsa.RSAPrivateKey
) -> None:
    limit = RateLimit(rate=0.5, burst=3)
    async with running_edge(descriptor_set, upstream, signing_key, per_address=limit) as url:
        for _ in range(3):
            assert (await fetch(f"{url}/v1/files/a")).status == 200
        with reaches_nothing(upstream):
            refused = await fetch(f"{url}/v1/files/a")
        assert_error(refused, 429, 8)
        assert int(refused.headers["retry-after"]) >= 1
        other = await fetch(f"{url}/v1/files/a", source="127.0.0.2")
        assert other.status == 200


async def test_a_user_over_their_rate_gets_429_and_other_users_go_on(
    descriptor_set: Path, upstream: EchoUpstream, signing_key: rsa.RSAPrivateKey
) -> None:
    limit = RateLimit(rate=0.5, burst=2)
    alice = {"authorization": f"Bearer {token(signing_key, 'alice')}"}
    bob = {"authorization": f"Bearer {token(signing_key, 'bob')}"}
    async with running_edge(descriptor_set, upstream, signing_key, per_user=limit) as url:
        for _ in range(2):
            assert (await fetch(f"{url}/v1/files/a", headers=alice)).status == 200
        with reaches_nothing(upstream):
            refused = await fetch(f"{url}/v1/files/a", headers=alice)
        assert_error(refused, 429, 8)
        assert int(refused.headers["retry-after"]) >= 1
        assert (await fetch(f"{url}/v1/files/a", headers=bob)).status == 200


# -- tokens ---------------------------------------------------------------------------


async def test_a_route_that_needs_a_token_refuses_a_request_without_one(
    edge: str, upstream: EchoUpstream
) -> None:
    with reaches_nothing(upstream):
        answer = await fetch(f"{edge}/v1/fail", "POST", '{"code": 0}')
    assert_error(answer, 401, 16)
    assert answer.headers["www-authenticate"] == 'Bearer realm="shopmesh"'


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("Basic dXNlcjpwdw==", "invalid_request"),
        ("Bearer ", "invalid_request"),
        ("Bearer not-a-jwt", "invalid_token"),
    ],
)
async def test_a_malformed_authorization_is_refused(
    edge: str, upstream: EchoUpstream, header: str, error: str
) -> None:
    with reaches_nothing(upstream):
        answer = await fetch(f"{edge}/v1/fail", "POST", '{"code": 0}', {"authorization": header})
    assert_error(answer, 401, 16)
    assert f'error="{error}"' in answer.headers["www-authenticate"]


async def test_an_expired_token_is_refused_even_where_none_is_needed(
    edge: str, upstream: EchoUpstream, signing_key: rsa.RSAPrivateKey
) -> None:
    expired = token(signing_key, "alice", lifetime=-120)
    with reaches_nothing(upstream):
        answer = await fetch(f"{edge}/v1/files/a", headers={"authorization": f"Bearer {expired}"})
    assert_error(answer, 401, 16)
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_the_verified_user_reaches_the_service_and_a_forged_one_does_not(
    edge: str, signing_key: rsa.RSAPrivateKey
) -> None:
    headers = {
        "authorization": f"Bearer {token(signing_key, 'alice')}",
        "grpc-metadata-x-shop-user": "mallory",
    }
    answer = await fetch(f"{edge}/v1/shelves/1/books/2:cancel", "POST", "{}", headers)
    assert answer.status == 200
    assert answer.json()["metadata"]["x-shop-user"] == "alice"


# -- CORS and headers -----------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin_is_answered(
    edge: str, upstream: EchoUpstream
) -> None:
    with reaches_nothing(upstream):
        answer = await fetch(
            f"{edge}/v1/fail",
            "OPTIONS",
            headers={
                "origin": ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
    assert answer.status == 204
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()


async def test_a_preflight_from_another_origin_is_refused(
    edge: str, upstream: EchoUpstream
) -> None:
    with reaches_nothing(upstream):
        answer = await fetch(
            f"{edge}/v1/fail",
            "OPTIONS",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
    assert answer.status == 403
    assert "access-control-allow-origin" not in answer.headers


async def test_answers_carry_cors_only_for_allowed_origins(edge: str) -> None:
    allowed = await fetch(f"{edge}/v1/files/a", headers={"origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "origin" in allowed.headers["vary"].lower()
    other = await fetch(f"{edge}/v1/files/a", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_security_headers_on_api_answers_and_errors(edge: str) -> None:
    for answer in (await fetch(f"{edge}/v1/files/a"), await fetch(f"{edge}/v1/nowhere")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in answer.headers  # plain HTTP here


# -- sizes and time -------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_and_reaches_nothing(
    edge: str, upstream: EchoUpstream
) -> None:
    body = json.dumps({"query": "x" * 5000})
    with reaches_nothing(upstream):
        answer = await fetch(f"{edge}/v1/search", "POST", body)
    assert_error(answer, 413, 8)
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_request_the_service_is_slow_to_answer_is_504(edge: str) -> None:
    slow = await fetch(f"{edge}/v1/files/a", headers={"grpc-metadata-x-echo-delay": "2"})
    assert_error(slow, 504, 4)
    deadline = await fetch(
        f"{edge}/v1/files/a", headers={"grpc-metadata-x-echo-delay": "1", "grpc-timeout": "100m"}
    )
    assert_error(deadline, 504, 4)


async def test_a_client_whose_headers_never_finish_is_cut_off(edge: str) -> None:
    host, port = edge.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET /v1/files/a HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        await writer.drain()
        served = await fetch(f"{edge}/v1/files/b")  # another client meanwhile
        assert served.status == 200
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code":4' in answer
