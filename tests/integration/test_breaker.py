"""The per-endpoint breaker against a real mTLS endpoint that fails on demand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.client import DirectDataPlane, MeshClient
from mesh.config import BreakerPolicy, ClientPolicy, RetryPolicy
from mesh.errors import CircuitOpen
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.problems import Unavailable
from mesh.registry import Endpoint
from tests.harness.inprocess import IDENTITY_OF, StaticSource, start_server

FAILURES_TO_OPEN = 3
RESET_TIMEOUT = 0.5


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


# A reply of 5 MiB: an unknown length-delimited field (2) that protobuf keeps and re-sends.
_PADDING = 5 * 1024 * 1024
HUGE_REPLY = health_pb2.HealthCheckResponse.FromString(
    b"\x12" + _varint(_PADDING) + b"x" * _PADDING
)


class ScriptedHealth(health_pb2_grpc.HealthServicer):
    """Counts every call that reaches it; fails while `failing`; can hold calls.
    The request's `service` picks an answer that grpc refuses on the client's side."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = True
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:  # type: ignore[type-arg]
        self.calls += 1
        self.arrived.set()
        await self.gate.wait()
        if request.service == "huge-trailers":  # beyond the client's 16 KiB metadata limit
            await context.abort(grpc.StatusCode.NOT_FOUND, "x" * 20_000)
        if request.service == "huge-reply":  # beyond the client's 4 MiB message limit
            return HUGE_REPLY
        if request.service == "declared":  # the server says it is exhausted, with details
            details = Unavailable("overloaded").to_status().SerializeToString()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "overloaded",
                trailing_metadata=(("grpc-status-details-bin", details),),
            )
        if self.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted failure")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[tuple[ScriptedHealth, MeshClient]]:
    ensure_certificates(tmp_path, "shop.local", "default", ["flaky", "admin"])
    servicer = ScriptedHealth()
    server, address = await start_server(tmp_path, "flaky")
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await server.start()
    policy = ClientPolicy(
        timeout=2.0,
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(failure_threshold=FAILURES_TO_OPEN, reset_timeout=RESET_TIMEOUT),
    )
    client = MeshClient(
        DirectDataPlane(
            StaticSource([Endpoint("flaky", "flaky-1", address)]),
            channel_credentials(IdentityFiles(tmp_path, "admin")),
            policy,
            identity_of=IDENTITY_OF,
        )
    )
    try:
        yield servicer, client
    finally:
        await client.aclose()
        await server.stop(0)


async def _check(client: MeshClient, script: str = "") -> grpc.StatusCode | type[CircuitOpen]:
    try:
        await health_pb2_grpc.HealthStub(client.channel("flaky")).Check(
            health_pb2.HealthCheckRequest(service=script)
        )
    except CircuitOpen:
        return CircuitOpen
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_opens_after_consecutive_failures_then_fails_fast(
    endpoint: tuple[ScriptedHealth, MeshClient],
) -> None:
    servicer, client = endpoint
    for _ in range(FAILURES_TO_OPEN):
        assert await _check(client) == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == FAILURES_TO_OPEN

    started = time.monotonic()
    outcomes = [await _check(client) for _ in range(20)]
    assert outcomes == [CircuitOpen] * 20
    assert servicer.calls == FAILURES_TO_OPEN  # the endpoint was not touched
    assert time.monotonic() - started < RESET_TIMEOUT  # fast, and before any trial was due


async def test_after_the_reset_timeout_exactly_one_trial_goes_through(
    endpoint: tuple[ScriptedHealth, MeshClient],
) -> None:
    servicer, client = endpoint
    for _ in range(FAILURES_TO_OPEN):
        await _check(client)
    breaker = client.channel("flaky").breaker("flaky-1")
    assert breaker.state == "open"
    await asyncio.sleep(breaker.retry_after())  # the reset timeout passing is what is tested
    assert breaker.retry_after() == 0

    servicer.failing = False
    servicer.gate.clear()  # hold the trial call so that the others arrive while it runs
    servicer.arrived.clear()
    trial = asyncio.create_task(_check(client))
    await asyncio.wait_for(servicer.arrived.wait(), 5)
    others = await asyncio.gather(*(_check(client) for _ in range(5)))
    assert others == [CircuitOpen] * 5
    assert servicer.calls == FAILURES_TO_OPEN + 1

    servicer.gate.set()
    assert await trial == grpc.StatusCode.OK
    assert breaker.state == "closed"
    assert [await _check(client) for _ in range(3)] == [grpc.StatusCode.OK] * 3


@pytest.mark.parametrize("script", ["huge-trailers", "huge-reply"])
async def test_grpcs_own_size_limits_never_open_the_breaker(
    endpoint: tuple[ScriptedHealth, MeshClient], script: str
) -> None:
    """The caller's request (or what it asked for) was too big, not the endpoint sick."""
    servicer, client = endpoint
    outcomes = [await _check(client, script) for _ in range(FAILURES_TO_OPEN * 3)]

    assert outcomes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * (FAILURES_TO_OPEN * 3)
    assert client.channel("flaky").breaker("flaky-1").state == "closed"
    assert servicer.calls == FAILURES_TO_OPEN * 3


async def test_exhaustion_the_server_declares_opens_the_breaker(
    endpoint: tuple[ScriptedHealth, MeshClient],
) -> None:
    _, client = endpoint
    for _ in range(FAILURES_TO_OPEN):
        assert await _check(client, "declared") == grpc.StatusCode.RESOURCE_EXHAUSTED

    assert client.channel("flaky").breaker("flaky-1").state == "open"
