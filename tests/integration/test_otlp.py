"""With OTEL_EXPORTER_OTLP_ENDPOINT set, an instance sends its spans to that collector."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.supervisor import EtcdServer
from tests.harness.mesh import MeshHarness, write_config


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver that keeps (service name, span name) pairs."""

    def __init__(self) -> None:
        self.spans: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.put_nowait((attributes.get("service.name", ""), span.name))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    server = grpc.aio.server()
    servicer = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_spans_go_to_the_otlp_collector(
    collector: tuple[Collector, str],
    tmp_path: Path,
    etcd: EtcdServer,
    certs_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received, endpoint = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)  # inherited by the instance
    config = write_config(
        tmp_path, etcd_endpoint=etcd.endpoint, certs_dir=certs_dir, replicas={"product": 1}
    )
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        stub = product_pb2_grpc.ProductServiceStub(mesh.client().channel("product"))
        sampled = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"  # trace this call
        await stub.GetProduct(
            product_pb2.GetProductRequest(product_id="sku-mug"), metadata=[("traceparent", sampled)]
        )
        wanted = ("product", "/shop.product.v1.ProductService/GetProduct")
        while await asyncio.wait_for(received.spans.get(), 15) != wanted:
            pass
    finally:
        await mesh.aclose()
    assert not (
        config.state_dir / "traces" / "product-1.jsonl"
    ).exists()  # OTLP instead of the file
