"""The guard with tracing on: every call is sampled (ratio 1), OpenTelemetry's own grpc
instrumentation records the spans, and each call is still counted exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from mesh.authz import AuthzTable
from mesh.config import AuthzRule
from mesh.identity import IdentityFiles, channel_credentials, ensure_certificates
from mesh.problems import NotFound
from mesh.server import MeshInterceptor
from mesh.telemetry import HeadSampler, ServerMetrics
from tests.harness.inprocess import DOMAIN, NAMESPACE, start_server

SERVICE = "test.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    if request == b"missing":
        raise NotFound("thing", "missing")
    return request


@dataclass
class Traced:
    registry: CollectorRegistry
    spans: InMemorySpanExporter
    channels: dict[str, grpc.aio.Channel]

    async def call(self, caller: str, payload: bytes = b"hi") -> grpc.StatusCode:
        try:
            await self.channels[caller].unary_unary(METHOD)(payload, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    def handled(self, code: str, method: str = "Echo", service: str = SERVICE) -> float:
        labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": method}
        value = self.registry.get_sample_value(
            "grpc_server_handled_total", {**labels, "grpc_code": code}
        )
        return value or 0.0

    def started(self) -> float:
        labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Echo"}
        return self.registry.get_sample_value("grpc_server_started_total", labels) or 0.0

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans.get_finished_spans()]


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[Traced]:
    ensure_certificates(tmp_path, DOMAIN, NAMESPACE, ["svc", "admin", "stranger"])
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    rules = [
        AuthzRule(("admin",), (f"{SERVICE}/*",)),
        AuthzRule(("*",), ("grpc.health.v1.Health/*",)),
    ]
    guard = MeshInterceptor(
        AuthzTable(rules, DOMAIN, NAMESPACE),
        ServerMetrics(registry),
        tracing=aio_server_interceptor(tracer_provider=provider),  # type: ignore[no-untyped-call]
        sampler=HeadSampler(1.0),
    )
    server, address = await start_server(tmp_path, "svc")
    registrar = guard.registrar(server)
    registrar.add_registered_method_handlers(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), registrar)  # type: ignore[arg-type]
    await server.start()
    channels = {
        name: grpc.aio.secure_channel(address, channel_credentials(IdentityFiles(tmp_path, name)))
        for name in ("admin", "stranger")
    }
    try:
        yield Traced(registry, spans, channels)
    finally:
        for channel in channels.values():
            await channel.close()
        await server.stop(None)
        provider.shutdown()


async def test_a_traced_call_gets_one_span_and_is_counted_once(traced: Traced) -> None:
    assert await traced.call("admin") == grpc.StatusCode.OK
    assert await traced.call("admin", b"missing") == grpc.StatusCode.NOT_FOUND

    assert traced.span_names() == [METHOD, METHOD]
    assert traced.started() == 2
    assert (traced.handled("OK"), traced.handled("NotFound")) == (1, 1)


async def test_a_denied_caller_gets_no_span_and_is_counted_once(traced: Traced) -> None:
    assert await traced.call("stranger") == grpc.StatusCode.PERMISSION_DENIED

    assert traced.span_names() == []
    assert traced.started() == 1
    assert traced.handled("PermissionDenied") == 1


async def test_health_checks_are_never_traced(traced: Traced) -> None:
    stub: Any = health_pb2_grpc.HealthStub(traced.channels["stranger"])
    await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    assert traced.span_names() == []
    assert traced.handled("OK", method="Check", service="grpc.health.v1.Health") == 1
