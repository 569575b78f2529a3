"""The deadline of an inbound call bounds the calls it makes downstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from mesh.authz import AuthzTable
from mesh.client import DirectDataPlane, MeshClient
from mesh.config import AuthzRule, ClientPolicy
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.registry import Endpoint
from mesh.server import MeshInterceptor
from mesh.telemetry import ServerMetrics
from tests.harness.inprocess import IDENTITY_OF, StaticSource, start_server

DEFAULT_TIMEOUT = 4.0
RULES = [AuthzRule(callers=("*",), methods=("*",))]


class Back(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self.seen: list[float] = []

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:  # type: ignore[type-arg]
        remaining = context.time_remaining()
        assert remaining is not None
        self.seen.append(remaining)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class Front(health_pb2_grpc.HealthServicer):
    """Waits `request.service` seconds (as a float string), then calls the back."""

    def __init__(self, client: MeshClient) -> None:
        self._back = health_pb2_grpc.HealthStub(client.channel("back"))
        self.outcomes: asyncio.Queue[str] = asyncio.Queue()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:  # type: ignore[type-arg]
        try:
            await asyncio.sleep(float(request.service or 0))
            response = await self._back.Check(health_pb2.HealthCheckRequest())
        except asyncio.CancelledError:
            self.outcomes.put_nowait("CANCELLED")  # grpc.aio cancels a handler whose caller left
            raise
        except grpc.aio.AioRpcError as error:
            self.outcomes.put_nowait(error.code().name)
            raise
        self.outcomes.put_nowait("OK")
        return response  # type: ignore[no-any-return]


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[tuple[health_pb2_grpc.HealthStub, Front, Back]]:
    ensure_certificates(tmp_path, "shop.local", "default", ["front", "back", "admin"])
    interceptor = MeshInterceptor(
        AuthzTable(RULES, "shop.local", "default"), ServerMetrics(CollectorRegistry())
    )
    back, back_address = await start_server(tmp_path, "back")
    back_servicer = Back()
    health_pb2_grpc.add_HealthServicer_to_server(back_servicer, interceptor.registrar(back))
    front_client = MeshClient(
        DirectDataPlane(
            StaticSource([Endpoint("back", "back-1", back_address)]),
            channel_credentials(IdentityFiles(tmp_path, "front")),
            ClientPolicy(timeout=DEFAULT_TIMEOUT),
            identity_of=IDENTITY_OF,
        )
    )
    front, front_address = await start_server(tmp_path, "front")
    front_servicer = Front(front_client)
    health_pb2_grpc.add_HealthServicer_to_server(front_servicer, interceptor.registrar(front))
    await back.start()
    await front.start()
    channel = grpc.aio.secure_channel(
        front_address, channel_credentials(IdentityFiles(tmp_path, "admin"))
    )
    try:
        yield health_pb2_grpc.HealthStub(channel), front_servicer, back_servicer
    finally:
        await channel.close()
        await front_client.aclose()
        await front.stop(0)
        await back.stop(0)


Chain = tuple[health_pb2_grpc.HealthStub, Front, Back]


async def test_downstream_gets_what_is_left_of_the_callers_deadline(chain: Chain) -> None:
    stub, _, back = chain
    await stub.Check(health_pb2.HealthCheckRequest(service="0.3"), timeout=1.5)
    assert 0.5 < back.seen[-1] <= 1.5 - 0.3


async def test_without_a_caller_deadline_the_default_applies(chain: Chain) -> None:
    stub, _, back = chain
    await stub.Check(health_pb2.HealthCheckRequest(service="0"))
    assert DEFAULT_TIMEOUT - 1 < back.seen[-1] <= DEFAULT_TIMEOUT


async def test_an_exhausted_deadline_stops_the_chain(chain: Chain) -> None:
    stub, front, back = chain
    calls_before = len(back.seen)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.Check(health_pb2.HealthCheckRequest(service="0.4"), timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Whether grpc cancels the front's handler or our client refuses the late call,
    # the downstream call must not be made.
    assert await asyncio.wait_for(front.outcomes.get(), 5) in ("CANCELLED", "DEADLINE_EXCEEDED")
    assert len(back.seen) == calls_before
