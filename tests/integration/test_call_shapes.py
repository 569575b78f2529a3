"""Every call shape through the mesh client over real mTLS: unary, server streaming,
client streaming and bidirectional, balanced over two guarded servers; and a generated
stub with a stream-stream method (server reflection) against a live instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from mesh.authz import AuthzTable
from mesh.client import DirectDataPlane, MeshClient
from mesh.config import AuthzRule, ClientPolicy
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.registry import Endpoint
from mesh.server import MeshInterceptor
from mesh.telemetry import ServerMetrics
from tests.harness import shapes
from tests.harness.inprocess import DOMAIN, IDENTITY_OF, NAMESPACE, StaticSource, start_server
from tests.harness.mesh import MeshHarness

Context = grpc.aio.ServicerContext[Any, Any]


def handlers(name: str) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Shapes' four methods on the server called `name`, on raw bytes."""

    async def get(request: bytes, context: Context) -> bytes:
        return f"{name} got {request.decode()}".encode()

    async def watch(request: bytes, context: Context) -> AsyncIterator[bytes]:
        for index in range(3):
            yield f"{name}:{index}".encode()

    async def upload(requests: AsyncIterator[bytes], context: Context) -> bytes:
        read = [request.decode() async for request in requests]
        return f"{name} read {'+'.join(read)}".encode()

    async def chat(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        async for request in requests:
            yield f"{name} echoes {request.decode()}".encode()

    return {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "Watch": grpc.unary_stream_rpc_method_handler(watch),
        "Upload": grpc.stream_unary_rpc_method_handler(upload),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[MeshClient]:
    ensure_certificates(tmp_path, DOMAIN, NAMESPACE, ["svc", "admin"])
    guard = MeshInterceptor(
        AuthzTable([AuthzRule(("admin",), ("*",))], DOMAIN, NAMESPACE),
        ServerMetrics(CollectorRegistry()),
    )
    servers, endpoints = [], []
    for name in ("svc-1", "svc-2"):
        server, address = await start_server(tmp_path, "svc")
        guard.registrar(server).add_registered_method_handlers(shapes.SERVICE, handlers(name))
        await server.start()
        servers.append(server)
        endpoints.append(Endpoint("svc", name, address))
    mesh_client = MeshClient(
        DirectDataPlane(
            StaticSource(endpoints),
            channel_credentials(IdentityFiles(tmp_path, "admin")),
            ClientPolicy(timeout=5.0),
            identity_of=IDENTITY_OF,
        )
    )
    try:
        yield mesh_client
    finally:
        await mesh_client.aclose()
        for server in servers:
            await server.stop(None)


async def requests(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_every_shape_works_and_is_balanced(client: MeshClient) -> None:
    channel = client.channel("svc")

    gets = [await channel.unary_unary(shapes.GET)(b"x") for _ in range(2)]
    watches = [[m async for m in channel.unary_stream(shapes.WATCH)(b"")] for _ in range(2)]
    uploads = [await channel.stream_unary(shapes.UPLOAD)(requests(b"a", b"b")) for _ in range(2)]
    chats = [
        [m async for m in channel.stream_stream(shapes.CHAT)(requests(b"a", b"b"))]
        for _ in range(2)
    ]

    assert sorted(gets) == [b"svc-1 got x", b"svc-2 got x"]
    assert sorted(watches) == [
        [b"svc-1:0", b"svc-1:1", b"svc-1:2"],
        [b"svc-2:0", b"svc-2:1", b"svc-2:2"],
    ]
    assert sorted(uploads) == [b"svc-1 read a+b", b"svc-2 read a+b"]
    assert sorted(chats) == [
        [b"svc-1 echoes a", b"svc-1 echoes b"],
        [b"svc-2 echoes a", b"svc-2 echoes b"],
    ]


async def test_a_stream_gets_the_callers_deadline(client: MeshClient) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(2)
        yield b"b"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.channel("svc").stream_unary(shapes.UPLOAD)(slow(), timeout=0.3)

    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_generated_stream_stream_stub_through_the_mesh(shop: MeshHarness) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(shop.client().channel("product"))

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="*")

    [answer] = [reply async for reply in stub.ServerReflectionInfo(ask(), timeout=10)]

    names = {service.name for service in answer.list_services_response.service}
    assert "shop.product.v1.ProductService" in names
