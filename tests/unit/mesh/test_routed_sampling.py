"""The sampling decision each guarded call makes as it is admitted: by the caller's
traceparent when it sends one, else by the sampler's ratio; and never a span for a
caller that is denied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from mesh import inbound
from mesh.authz import AuthzTable
from mesh.config import AuthzRule
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.server import MeshInterceptor
from mesh.telemetry import HeadSampler, ServerMetrics
from tests.harness.inprocess import DOMAIN, NAMESPACE, start_server

SERVICE = "test.Routed"
METHOD = f"/{SERVICE}/Echo"
CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7


def traceparent(sampled: bool) -> tuple[str, str]:
    flags = "01" if sampled else "00"
    return ("traceparent", f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-{flags}")


@dataclass
class Server:
    spans: InMemorySpanExporter
    channels: dict[str, grpc.aio.Channel]
    seen: list[tuple[bool, inbound.TraceIds | None]] = field(default_factory=list)

    async def call(self, caller: str = "admin", *metadata: tuple[str, str]) -> grpc.StatusCode:
        try:
            await self.channels[caller].unary_unary(METHOD, _registered_method=True)(
                b"hi", metadata=metadata, timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


@pytest.fixture(params=[0.0, 1.0], ids=["ratio-0", "ratio-1"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    ensure_certificates(tmp_path, DOMAIN, NAMESPACE, ["svc", "admin", "stranger"])
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    guard = MeshInterceptor(
        AuthzTable([AuthzRule(("admin",), (f"{SERVICE}/*",))], DOMAIN, NAMESPACE),
        ServerMetrics(CollectorRegistry()),
        tracing=aio_server_interceptor(tracer_provider=provider),  # type: ignore[no-untyped-call]
        sampler=HeadSampler(request.param),
    )
    grpc_server, address = await start_server(tmp_path, "svc")
    channels = {
        name: grpc.aio.secure_channel(address, channel_credentials(IdentityFiles(tmp_path, name)))
        for name in ("admin", "stranger")
    }
    state = Server(spans, channels)

    async def echo(payload: bytes, context: Any) -> bytes:
        state.seen.append((trace.get_current_span().is_recording(), inbound.trace_ids()))
        return payload

    guard.registrar(grpc_server).add_registered_method_handlers(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    await grpc_server.start()
    try:
        yield state
    finally:
        for channel in channels.values():
            await channel.close()
        await grpc_server.stop(None)
        provider.shutdown()


async def test_without_a_traceparent_the_ratio_decides(
    server: Server, request: pytest.FixtureRequest
) -> None:
    assert await server.call() == grpc.StatusCode.OK

    traced = request.node.callspec.id == "ratio-1"
    assert len(server.spans.get_finished_spans()) == (1 if traced else 0)
    [(recording, ids)] = server.seen
    assert recording is traced
    assert ids is not None
    assert ids[0] != CALLER_TRACE  # a trace of its own


async def test_a_sampled_traceparent_is_traced_as_a_child_whatever_the_ratio(
    server: Server,
) -> None:
    assert await server.call("admin", traceparent(sampled=True)) == grpc.StatusCode.OK

    [span] = server.spans.get_finished_spans()
    assert span.context is not None
    assert span.context.trace_id == CALLER_TRACE
    assert span.parent is not None
    assert span.parent.span_id == CALLER_SPAN


async def test_an_unsampled_traceparent_is_not_traced_but_keeps_its_trace(
    server: Server,
) -> None:
    assert await server.call("admin", traceparent(sampled=False)) == grpc.StatusCode.OK

    assert server.spans.get_finished_spans() == ()
    assert server.seen == [(False, (CALLER_TRACE, CALLER_SPAN))]


async def test_a_denied_caller_gets_no_span_whatever_the_decision(server: Server) -> None:
    assert await server.call("stranger") == grpc.StatusCode.PERMISSION_DENIED
    assert await server.call("stranger", traceparent(sampled=True)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )

    assert server.spans.get_finished_spans() == ()
    assert server.seen == []
