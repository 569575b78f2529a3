"""RED metrics on /metrics, named as Go's grpc-prometheus names them."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.type import money_pb2
from shop.product.v1 import product_pb2, product_pb2_grpc

from tests.harness.mesh import MeshHarness
from tests.harness.metrics import scrape_instance, value

SERVICE = "shop.product.v1.ProductService"


def _handled(samples: dict, method: str, code: str) -> float:  # type: ignore[type-arg]
    return value(
        samples, "grpc_server_handled_total",
        grpc_type="unary", grpc_service=SERVICE, grpc_method=method, grpc_code=code,
    )  # fmt: skip


async def test_handled_counts_by_code_match_the_calls_made(shop: MeshHarness) -> None:
    stub = product_pb2_grpc.ProductServiceStub(shop.client().channel("product"))
    product_id = f"sku-metrics-{uuid.uuid4().hex[:6]}"
    price = money_pb2.Money(currency_code="USD", units=3)
    before = scrape_instance(shop.instances["product-1"])

    await stub.CreateProduct(
        product_pb2.CreateProductRequest(
            product=product_pb2.Product(product_id=product_id, name="Metrics", price=price)
        )
    )
    for _ in range(3):
        await stub.GetProduct(product_pb2.GetProductRequest(product_id=product_id))
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetProduct(product_pb2.GetProductRequest(product_id="sku-does-not-exist"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.CreateProduct(product_pb2.CreateProductRequest(product=product_pb2.Product()))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    after = scrape_instance(shop.instances["product-1"])

    def delta(method: str, code: str) -> float:
        return _handled(after, method, code) - _handled(before, method, code)

    assert delta("GetProduct", "OK") == 3
    assert delta("GetProduct", "NotFound") == 2
    assert delta("CreateProduct", "OK") == 1
    assert delta("CreateProduct", "InvalidArgument") == 1
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "GetProduct"}
    started = value(after, "grpc_server_started_total", **labels) - value(
        before, "grpc_server_started_total", **labels
    )
    observed = value(after, "grpc_server_handling_seconds_count", **labels) - value(
        before, "grpc_server_handling_seconds_count", **labels
    )
    assert started == observed == 5
