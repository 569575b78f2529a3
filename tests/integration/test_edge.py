"""The edge in a real mesh (product, inventory, order, payment, shipping, auth, edge as
processes): the
shop's API over HTTP/JSON, tokens from the auth service checked at the edge, the user
they name carried to order, which acts for that user alone."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.supervisor import EtcdServer, NatsServer, TokenError, fetch_token
from tests.harness.http import Answer, fetch
from tests.harness.mesh import MeshHarness, write_config

CHEAP_HASHES = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("edge"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={
            "product": 1,
            "inventory": 1,
            "order": 1,
            "payment": 1,
            "shipping": 1,
            "auth": 1,
            "edge": 1,
        },
        overrides={"services": {"auth": {"port": 0, "metrics_port": 0, "settings": CHEAP_HASHES}}},
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def edge(mesh: MeshHarness) -> str:
    endpoint = await mesh.instances["edge-1"].wait_ready(mesh.etcd)
    return endpoint.metadata["url"]


async def post(url: str, body: Any, token: str | None = None) -> Answer:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return await fetch(url, "POST", json.dumps(body), headers)


async def sign_up(edge: str) -> tuple[str, str]:
    """A new user's id and token, through the edge."""
    username = f"u-{uuid.uuid4().hex[:10]}"
    registered = await post(
        f"{edge}/v1/auth/register", {"username": username, "password": "s3cret-pass"}
    )
    assert registered.status == 200, registered.body
    login = await post(f"{edge}/v1/auth/login", {"username": username, "password": "s3cret-pass"})
    assert login.status == 200, login.body
    answer = login.json()
    assert answer["tokenType"] == "Bearer"
    assert login.headers["cache-control"] == "no-store"
    return registered.json()["userId"], answer["accessToken"]


ORDER = {"items": [{"productId": "sku-mug", "quantity": "1"}]}


async def test_the_catalogue_is_public(edge: str) -> None:
    answer = await fetch(f"{edge}/v1/products")
    assert answer.status == 200
    ids = {p["productId"] for p in answer.json()["products"]}
    assert {"sku-espresso", "sku-grinder", "sku-mug"} <= ids
    one = await fetch(f"{edge}/v1/products/sku-mug")
    assert one.json()["product"]["price"]["currencyCode"] == "USD"
    missing = await fetch(f"{edge}/v1/products/sku-none")
    assert missing.status == 404
    assert missing.json()["code"] == 5


async def test_an_order_is_the_token_users_whatever_the_body_says(edge: str) -> None:
    user, token = await sign_up(edge)
    placed = await post(f"{edge}/v1/orders", {**ORDER, "customerId": "someone-else"}, token)
    assert placed.status == 200, placed.body
    order = placed.json()["order"]
    assert order["customerId"] == user
    got = await fetch(
        f"{edge}/v1/orders/{order['orderId']}", headers={"authorization": f"Bearer {token}"}
    )
    assert got.json()["order"]["orderId"] == order["orderId"]
    mine = await fetch(f"{edge}/v1/orders", headers={"authorization": f"Bearer {token}"})
    assert [o["orderId"] for o in mine.json()["orders"]] == [order["orderId"]]


async def test_another_users_order_is_not_found(edge: str) -> None:
    _, alice = await sign_up(edge)
    _, bob = await sign_up(edge)
    placed = (await post(f"{edge}/v1/orders", ORDER, alice)).json()["order"]
    seen = await fetch(
        f"{edge}/v1/orders/{placed['orderId']}", headers={"authorization": f"Bearer {bob}"}
    )
    assert seen.status == 404
    listed = await fetch(
        f"{edge}/v1/orders?customerId={placed['customerId']}",
        headers={"authorization": f"Bearer {bob}"},
    )
    assert listed.json().get("orders", []) == []


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """Signed with HMAC, the RSA public key as the secret (PyJWT refuses to make one)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


async def _forged_tokens(edge: str) -> dict[str, str]:
    jwks = (await fetch(f"{edge}/.well-known/jwks.json")).json()
    real = jwks["keys"][0]
    now = int(time.time())
    claims = {
        "iss": "https://auth.shop.local",
        "aud": "shopmesh",
        "sub": "mallory",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(real))
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "alg none": _unsigned(claims),
        "HS256 with the public key": _hs256(claims, public_pem, real["kid"]),
        "no kid": jwt.encode(claims, stranger, algorithm="RS256"),
        "unknown kid": jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "nope"}),
        "another key, real kid": jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": real["kid"]}
        ),
        "garbage": "not.a.token",
    }


async def test_forged_tokens_are_refused_and_place_nothing(mesh: MeshHarness, edge: str) -> None:
    forged = await _forged_tokens(edge)
    for name, token in forged.items():
        answer = await post(f"{edge}/v1/orders", ORDER, token)
        assert answer.status == 401, (name, answer.body)
        assert answer.json()["code"] == 16
        assert answer.headers["www-authenticate"].startswith('Bearer realm="shopmesh", error=')
    anonymous = await fetch(f"{edge}/v1/orders?customerId=mallory")
    assert anonymous.status == 401  # no token: the order API needs one
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="shopmesh"'
    orders = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))
    placed = await orders.ListOrders(order_pb2.ListOrdersRequest(customer_id="mallory"))
    assert list(placed.orders) == []  # as admin: nothing was written


async def test_the_callers_trace_continues_through_the_edge(mesh: MeshHarness, edge: str) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    answer = await fetch(f"{edge}/v1/products/sku-mug", headers={"traceparent": traceparent})
    assert answer.status == 200
    traces = mesh.config.state_dir / "traces"
    until = time.monotonic() + 10
    services: set[str] = set()
    while services != {"edge", "product"} and time.monotonic() < until:
        await asyncio.sleep(0.2)  # spans are written as they end, in batches
        services = {
            span["service"]
            for path in traces.glob("*.jsonl")
            for span in map(json.loads, path.read_text().splitlines())
            if span["trace_id"] == trace_id
        }
    assert services == {"edge", "product"}


async def test_the_edge_reaches_only_what_authz_lets_it(edge: str) -> None:
    _, token = await sign_up(edge)
    answer = await post(
        f"{edge}/v1/reservations",
        {"orderId": "ord-x", "items": [{"productId": "sku-mug", "quantity": "1"}]},
        token,
    )
    assert answer.status == 403
    assert answer.json()["code"] == 7


async def test_the_jwks_is_served_through_the_edge(edge: str) -> None:
    answer = await fetch(f"{edge}/.well-known/jwks.json")
    keys = answer.json()["keys"]
    assert keys
    assert {(k["kty"], k["alg"]) for k in keys} == {("RSA", "RS256")}
    assert all(k["kid"] for k in keys)


async def test_meshctl_token_registers_once_then_logs_in(edge: str, tmp_path: Path) -> None:
    user = f"t-{uuid.uuid4().hex[:8]}"
    first = await asyncio.to_thread(fetch_token, edge, user, password=None, state_dir=tmp_path)
    again = await asyncio.to_thread(fetch_token, edge, user, password=None, state_dir=tmp_path)
    for token in (first, again):
        answer = await fetch(f"{edge}/v1/orders", headers={"authorization": f"Bearer {token}"})
        assert answer.status == 200
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600


async def test_meshctl_token_needs_the_password_of_a_user_it_did_not_register(
    edge: str, tmp_path: Path
) -> None:
    username = f"t-{uuid.uuid4().hex[:8]}"
    await post(f"{edge}/v1/auth/register", {"username": username, "password": "their-own-pw"})
    with pytest.raises(TokenError, match="--password"):
        await asyncio.to_thread(fetch_token, edge, username, password=None, state_dir=tmp_path)
    with pytest.raises(TokenError, match="401"):
        await asyncio.to_thread(
            fetch_token, edge, username, password="wrong-pw-1", state_dir=tmp_path
        )
    token = await asyncio.to_thread(
        fetch_token, edge, username, password="their-own-pw", state_dir=tmp_path
    )
    assert token.count(".") == 2


async def test_watching_an_order_streams_it_until_it_is_final(edge: str) -> None:
    _, token = await sign_up(edge)
    order = (await post(f"{edge}/v1/orders", ORDER, token)).json()["order"]
    headers = {"authorization": f"Bearer {token}", "grpc-timeout": "1200m"}
    answer = await fetch(f"{edge}/v1/orders/{order['orderId']}:watch", headers=headers)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in answer.body.splitlines()]
    # A placed order is CONFIRMED, a final status: the stream sends it once and ends.
    assert [line["result"]["order"]["status"] for line in lines] == ["ORDER_STATUS_CONFIRMED"]
    assert lines[0]["result"]["order"]["orderId"] == order["orderId"]
    events = await fetch(
        f"{edge}/v1/orders/{order['orderId']}:watch",
        headers={**headers, "accept": "text/event-stream"},
    )
    assert events.body.decode().startswith('data: {"result":{"order":')
    _, other = await sign_up(edge)
    foreign = await fetch(
        f"{edge}/v1/orders/{order['orderId']}:watch", headers={"authorization": f"Bearer {other}"}
    )
    assert foreign.status == 404
