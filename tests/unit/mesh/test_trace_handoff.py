"""A call the mesh client makes while serving an inbound call carries that call's trace
id, even when the inbound call is not traced: one in-process server, one MeshClient
with OpenTelemetry's client interceptor, as the runtime builds it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider

from mesh import inbound
from mesh.client import DirectDataPlane, MeshClient
from mesh.config import ClientPolicy
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.registry import Endpoint
from tests.harness import shapes
from tests.harness.inprocess import DOMAIN, IDENTITY_OF, NAMESPACE, StaticSource, start_server

INBOUND_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
INBOUND_SPAN = 0xB7AD6B7169203331


class Deadline:
    def __init__(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds

    def time_remaining(self) -> float:
        return self._until - time.monotonic()


@pytest.fixture
async def client_and_seen(tmp_path: Path) -> AsyncIterator[tuple[MeshClient, list[dict[str, Any]]]]:
    ensure_certificates(tmp_path, DOMAIN, NAMESPACE, ["svc", "caller"])
    seen: list[dict[str, Any]] = []

    async def get(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen.append(dict(context.invocation_metadata() or ()))
        return b""

    server, address = await start_server(tmp_path, "svc")
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                shapes.SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)}
            ),
        )
    )
    await server.start()
    provider = TracerProvider()
    client = MeshClient(
        DirectDataPlane(
            StaticSource([Endpoint("svc", "svc-1", address)]),
            channel_credentials(IdentityFiles(tmp_path, "caller")),
            ClientPolicy(),
            identity_of=IDENTITY_OF,
            interceptors=aio_client_interceptors(tracer_provider=provider),  # type: ignore[no-untyped-call]
        )
    )
    try:
        yield client, seen
    finally:
        await client.aclose()
        await server.stop(None)
        provider.shutdown()


async def test_an_untraced_inbound_calls_trace_id_reaches_the_next_hop(
    client_and_seen: tuple[MeshClient, list[dict[str, Any]]],
) -> None:
    client, seen = client_and_seen

    async def serving_an_inbound_call() -> None:
        inbound.enter(Deadline(5.0), (INBOUND_TRACE, INBOUND_SPAN))
        await client.channel("svc").unary_unary(shapes.GET)(b"", timeout=5)

    await asyncio.create_task(serving_an_inbound_call())  # its own context: nothing leaks

    [metadata] = seen
    version, trace_id, _, flags = metadata["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", f"{INBOUND_TRACE:032x}", "00")
