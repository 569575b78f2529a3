"""Failures travel up a call chain without multiplying: each hop retries its own calls,
and answers a failure that survived its retries as DependencyFailed, which its callers
neither retry nor count against it.

The chain is three real mTLS servers, each with the mesh's interceptor, each calling the
next through a MeshClient: test -> hop1 -> hop2 -> hop3, every call an idempotent one
(ProductService.GetProduct, NO_SIDE_EFFECTS), so every hop would retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.authz import AuthzTable
from mesh.client import DirectDataPlane, MeshClient
from mesh.config import AuthzRule, BreakerPolicy, ClientPolicy, RetryPolicy
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.problems import DEPENDENCY_FAILED, Unavailable, error_reason
from mesh.registry import Endpoint
from mesh.server import MeshInterceptor
from mesh.telemetry import ServerMetrics
from tests.harness.inprocess import IDENTITY_OF, StaticSource, start_server

MAX_ATTEMPTS = 3
HOPS = ("hop1", "hop2", "hop3")
POLICY = ClientPolicy(
    timeout=5.0,
    retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, initial_backoff=0.001, max_backoff=0.001),
    breaker=BreakerPolicy(failure_threshold=3, reset_timeout=60.0),
)
Context = grpc.aio.ServicerContext[Any, Any]


class Forward(product_pb2_grpc.ProductServiceServicer):
    """Asks the next hop; the last hop is down (a failure of its own: it counts)."""

    def __init__(self, next_hop: Any | None) -> None:
        self.next_hop = next_hop
        self.calls = 0

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: Context
    ) -> product_pb2.GetProductResponse:
        self.calls += 1
        if self.next_hop is None:
            raise Unavailable("the last hop is down")
        return await self.next_hop.GetProduct(request)  # type: ignore[no-any-return]


@dataclass
class Chain:
    servicers: dict[str, Forward]
    clients: dict[str, MeshClient]  # by caller: "test", "hop1", "hop2"
    entry: Any  # the test's stub to hop1


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    ensure_certificates(tmp_path, "shop.local", "default", [*HOPS, "admin"])
    authz = AuthzTable([AuthzRule(("*",), ("*",))], "shop.local", "default")
    servers: list[grpc.aio.Server] = []
    addresses: dict[str, str] = {}
    for hop in HOPS:
        server, addresses[hop] = await start_server(tmp_path, hop)
        servers.append(server)
    source = StaticSource([Endpoint(hop, f"{hop}-1", addresses[hop]) for hop in HOPS])

    def client(identity: str) -> MeshClient:
        return MeshClient(
            DirectDataPlane(
                source,
                channel_credentials(IdentityFiles(tmp_path, identity)),
                POLICY,
                identity_of=IDENTITY_OF,
            )
        )

    clients = {"test": client("admin"), "hop1": client("hop1"), "hop2": client("hop2")}
    servicers: dict[str, Forward] = {}
    for index, (hop, server) in enumerate(zip(HOPS, servers, strict=True)):
        caller = clients.get(hop)
        next_hop = (
            product_pb2_grpc.ProductServiceStub(caller.channel(HOPS[index + 1]))  # type: ignore[no-untyped-call]
            if caller is not None
            else None
        )
        servicers[hop] = Forward(next_hop)
        guard = MeshInterceptor(authz, ServerMetrics(CollectorRegistry()))
        product_pb2_grpc.add_ProductServiceServicer_to_server(
            servicers[hop], guard.registrar(server)
        )
        await server.start()
    entry = product_pb2_grpc.ProductServiceStub(clients["test"].channel("hop1"))  # type: ignore[no-untyped-call]
    try:
        yield Chain(servicers, clients, entry)
    finally:
        for mesh_client in clients.values():
            await mesh_client.aclose()
        for server in servers:
            await server.stop(None)


async def test_the_last_hop_sees_max_attempts_not_their_power(chain: Chain) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chain.entry.GetProduct(product_pb2.GetProductRequest(product_id="sku-1"))

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    status = rpc_status.from_call(caught.value)
    assert status is not None
    assert error_reason(status) == DEPENDENCY_FAILED
    assert [chain.servicers[hop].calls for hop in HOPS] == [1, 1, MAX_ATTEMPTS]


async def test_the_middle_hops_breakers_stay_closed(chain: Chain) -> None:
    for _ in range(POLICY.breaker.failure_threshold * 2):
        with pytest.raises(grpc.aio.AioRpcError):
            await chain.entry.GetProduct(product_pb2.GetProductRequest(product_id="sku-1"))

    # hop2's own calls to hop3 failed for real: its breaker for hop3 opened.
    assert chain.clients["hop2"].channel("hop3").breaker("hop3-1").state == "open"
    # Everyone upstream only heard that a dependency failed: their breakers stay closed.
    assert chain.clients["hop1"].channel("hop2").breaker("hop2-1").state == "closed"
    assert chain.clients["test"].channel("hop1").breaker("hop1-1").state == "closed"
