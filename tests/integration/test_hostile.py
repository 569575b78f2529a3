"""One caller's bad input, on the live shop: it gets a clear, small error, and nobody
else notices. Each test is a request a hostile (or careless) caller can send."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.config import ADMIN_IDENTITY
from mesh.identity import IdentityFiles, channel_credentials
from tests.harness.mesh import MeshHarness
from tests.harness.metrics import scrape_instance, value

HUGE_ID = "sku-" + "x" * 20_000


def orders(shop: MeshHarness) -> Any:
    return order_pb2_grpc.OrderServiceStub(shop.client().channel("order"))


def place(customer: str, *items: tuple[str, int], request_id: str = "") -> Any:
    return order_pb2.PlaceOrderRequest(
        customer_id=customer,
        items=[order_pb2.OrderItem(product_id=p, quantity=q) for p, q in items],
        request_id=request_id,
    )


def fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None, error
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [violation.field for violation in bad.field_violations]


def trailer_size(error: grpc.aio.AioRpcError) -> int:
    metadata = error.trailing_metadata() or ()
    return len((error.details() or "").encode()) + sum(len(v) for _, v in metadata)


def started(shop: MeshHarness, instance: str, service: str, method: str) -> float:
    return value(
        scrape_instance(shop.instances[instance]), "grpc_server_started_total",
        grpc_type="unary", grpc_service=service, grpc_method=method,
    )  # fmt: skip


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_a_huge_product_id_is_refused_with_a_small_error(shop: MeshHarness) -> None:
    error = await refused(orders(shop).PlaceOrder(place("ada", (HUGE_ID, 1)), timeout=10))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields(error) == ["items[0].product_id"]
    assert trailer_size(error) < 1024


async def test_bad_orders_never_open_a_breaker_for_other_customers(shop: MeshHarness) -> None:
    threshold = shop.config.client.breaker.failure_threshold
    for _ in range(threshold * 2):
        error = await refused(orders(shop).PlaceOrder(place("eve", (HUGE_ID, 1)), timeout=10))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT

    placed = await orders(shop).PlaceOrder(place("bob", ("sku-mug", 1)), timeout=10)

    assert placed.order.customer_id == "bob"


async def test_an_order_is_priced_with_one_call_to_product(shop: MeshHarness) -> None:
    product = "shop.product.v1.ProductService"
    batches = started(shop, "product-1", product, "BatchGetProducts")
    singles = started(shop, "product-1", product, "GetProduct")

    await orders(shop).PlaceOrder(
        place("ada", ("sku-mug", 1), ("sku-espresso", 1), ("sku-grinder", 1)), timeout=10
    )

    assert started(shop, "product-1", product, "BatchGetProducts") == batches + 1
    assert started(shop, "product-1", product, "GetProduct") == singles


async def test_thousands_of_items_are_refused_before_any_downstream_call(
    shop: MeshHarness,
) -> None:
    product = "shop.product.v1.ProductService"
    batches = started(shop, "product-1", product, "BatchGetProducts")
    items = [(f"sku-{index}", 1) for index in range(5_000)]

    error = await refused(orders(shop).PlaceOrder(place("eve", *items), timeout=10))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields(error) == ["items"]
    assert "at most 100 items" in (error.details() or "")
    assert started(shop, "product-1", product, "BatchGetProducts") == batches


@pytest.mark.parametrize(
    ("service", "method", "request_", "field"),
    [
        ("product", "GetProduct", product_pb2.GetProductRequest(product_id=HUGE_ID), "product_id"),
        (
            "product",
            "BatchGetProducts",
            product_pb2.BatchGetProductsRequest(product_ids=["sku-mug", "Bad!"]),
            "product_ids[1]",
        ),
        ("order", "GetOrder", order_pb2.GetOrderRequest(order_id="ord-\n-forged"), "order_id"),
        ("order", "ListOrders", order_pb2.ListOrdersRequest(customer_id="x" * 65), "customer_id"),
        ("order", "ListOrders", order_pb2.ListOrdersRequest(page_token="t" * 300), "page_token"),
        (
            "inventory",
            "GetReservation",
            inventory_pb2.GetReservationRequest(order_id=HUGE_ID),
            "order_id",
        ),
        ("inventory", "GetStock", inventory_pb2.GetStockRequest(product_id="SKU"), "product_id"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_every_method_validates_its_ids_at_its_boundary(
    shop: MeshHarness, service: str, method: str, request_: Any, field: str
) -> None:
    stubs = {
        "product": product_pb2_grpc.ProductServiceStub,
        "order": order_pb2_grpc.OrderServiceStub,
        "inventory": inventory_pb2_grpc.InventoryServiceStub,
    }
    stub = stubs[service](shop.client().channel(service))  # type: ignore[no-untyped-call]

    error = await refused(getattr(stub, method)(request_, timeout=10))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields(error) == [field]
    assert trailer_size(error) < 1024


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x0a\x02\xff\xfe"], ids=["junk", "utf8"])
async def test_undecodable_bytes_are_invalid_argument_and_counted(
    shop: MeshHarness, raw: bytes
) -> None:
    order = shop.instances["order-1"]
    assert order.endpoint is not None

    def invalid() -> float:
        return value(
            scrape_instance(order), "grpc_server_handled_total", grpc_type="unary",
            grpc_service="shop.order.v1.OrderService", grpc_method="PlaceOrder",
            grpc_code="InvalidArgument",
        )  # fmt: skip

    before = invalid()
    credentials = channel_credentials(IdentityFiles(shop.config.certs_dir, ADMIN_IDENTITY))
    async with grpc.aio.secure_channel(order.endpoint.address, credentials) as channel:
        error = await refused(
            channel.unary_unary("/shop.order.v1.OrderService/PlaceOrder")(raw, timeout=10)
        )

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "shop.order.v1.PlaceOrderRequest" in (error.details() or "")
    assert "Unexpected" not in (error.details() or "")
    assert invalid() == before + 1


# -- idempotency under concurrency -------------------------------------------------------


async def scarce_product(shop: MeshHarness, stock: int) -> str:
    """A new product with `stock` units on hand."""
    product_id = f"sku-scarce-{uuid.uuid4().hex[:8]}"
    products = product_pb2_grpc.ProductServiceStub(shop.client().channel("product"))
    await products.CreateProduct(
        product_pb2.CreateProductRequest(
            product=product_pb2.Product(
                product_id=product_id,
                name="Scarce",
                price=money_pb2.Money(currency_code="USD", units=5),
            )
        ),
        timeout=10,
    )
    inventory = inventory_pb2_grpc.InventoryServiceStub(shop.client().channel("inventory"))
    until = time.monotonic() + 10
    while True:  # NOT_FOUND until inventory learns the product from product's event
        try:
            await inventory.AdjustStock(
                inventory_pb2.AdjustStockRequest(product_id=product_id, delta=stock, reason="test"),
                timeout=10,
            )
            return product_id
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND or time.monotonic() > until:
                raise
        await asyncio.sleep(0.05)


async def stock_of(shop: MeshHarness, product_id: str) -> Any:
    inventory = inventory_pb2_grpc.InventoryServiceStub(shop.client().channel("inventory"))
    response = await inventory.GetStock(
        inventory_pb2.GetStockRequest(product_id=product_id), timeout=10
    )
    return response.stock


async def test_concurrent_retries_of_one_order_hold_its_stock_once(shop: MeshHarness) -> None:
    product_id = await scarce_product(shop, stock=2)
    retry = place("retrier", (product_id, 1), request_id=f"key-{uuid.uuid4().hex}")

    answers = await asyncio.gather(*(orders(shop).PlaceOrder(retry, timeout=20) for _ in range(20)))

    assert len({answer.order.order_id for answer in answers}) == 1
    stock = await stock_of(shop, product_id)
    assert (stock.reserved, stock.available) == (1, 1)
    bystander = await orders(shop).PlaceOrder(place("bystander", (product_id, 1)), timeout=10)
    assert bystander.order.order_id != answers[0].order.order_id


async def test_a_reused_request_id_with_other_items_is_refused(shop: MeshHarness) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = await orders(shop).PlaceOrder(place("ada", ("sku-mug", 1), request_id=key), timeout=10)

    error = await refused(
        orders(shop).PlaceOrder(place("ada", ("sku-mug", 2), request_id=key), timeout=10)
    )
    again = await orders(shop).PlaceOrder(place("ada", ("sku-mug", 1), request_id=key), timeout=10)

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fields(error) == ["request_id"]
    assert again.order == first.order
