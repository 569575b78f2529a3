"""The order saga with real processes: product, inventory, order, payment (declining
mallory) and shipping (refusing Antarctica, answering slowly), called as admin through
the mesh client. An order that succeeds; a declined payment and a refused shipment that
undo what was done; and an order process killed (SIGKILL) while its shipment is being
created, whose saga a restarted process finishes with exactly one charge."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.shipping.v1 import shipping_pb2

from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.mesh import REPO, MeshHarness, write_config

SHIPPING_DELAY_MS = 1200  # the window in which the order process is killed
SAGA = {
    "lease_seconds": 3.0,
    "step_timeout_seconds": 2.5,
    "retry_seconds": 0.5,
    "max_attempts": 3,
    "resume_interval_seconds": 0.3,
}
ORDER_CALLS = {
    "callers": ["order"],
    "methods": [
        "shop.payment.v1.PaymentService/Charge",
        "shop.payment.v1.PaymentService/Refund",
        "shop.shipping.v1.ShippingService/CreateShipment",
        "shop.shipping.v1.ShippingService/CancelShipment",
    ],
}
PRODUCT = "sku-mug"


def _authz() -> list[dict[str, Any]]:
    """The repo's authz table, with order's calls to payment and shipping if it lacks
    them (mesh.yaml grants them once the saga's entries are added there)."""
    rules: list[dict[str, Any]] = yaml.safe_load((REPO / "mesh.yaml").read_text())["authz"]
    granted = {m for rule in rules if "order" in rule["callers"] for m in rule["methods"]}
    if not set(ORDER_CALLS["methods"]) <= granted:
        rules.append(ORDER_CALLS)
    return rules


def _service(settings: dict[str, Any]) -> dict[str, Any]:
    return {"replicas": 1, "port": 0, "metrics_port": 0, "settings": settings}


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("saga"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={"product": 1, "inventory": 1, "order": 1, "payment": 1, "shipping": 1},
        overrides={
            "services": {
                "order": _service({"saga": SAGA}),
                "payment": _service({"decline": {"customers": ["mallory"]}}),
                "shipping": _service(
                    {"fail": {"countries": ["AQ"]}, "delay_ms": SHIPPING_DELAY_MS}
                ),
            },
            "authz": _authz(),
        },
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start({"product": 1, "inventory": 1, "order": 1, "payment": 1, "shipping": 1})
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def orders(mesh: MeshHarness) -> Any:
    return order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def payments(mesh: MeshHarness) -> Any:
    return payment_pb2_grpc.PaymentServiceStub(mesh.client().channel("payment"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def inventory(mesh: MeshHarness) -> Any:
    return inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))  # type: ignore[no-untyped-call]


def place(customer: str = "alice", country: str = "NL") -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(
        customer_id=customer,
        items=[order_pb2.OrderItem(product_id=PRODUCT, quantity=2)],
        request_id=f"r-{uuid.uuid4().hex[:12]}",
        shipping_address=shipping_pb2.Address(
            name="Grace Hopper", street="1 Navy Way", city="Arlington", postal_code="22201",
            country=country,
        ),
    )  # fmt: skip


async def available(inventory: Any) -> int:
    response = await inventory.GetStock(inventory_pb2.GetStockRequest(product_id=PRODUCT))
    return int(response.stock.available)


async def charged(payments: Any, order_id: str) -> list[Any]:
    response = await payments.ListPayments(payment_pb2.ListPaymentsRequest(order_id=order_id))
    return list(response.payments)


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def details(error: grpc.aio.AioRpcError, kind: Any) -> list[Any]:
    status = rpc_status.from_call(error)
    found = []
    for packed in status.details:
        message = kind()
        if packed.Unpack(message):
            found.append(message)
    return found


def failed_order(error: grpc.aio.AioRpcError) -> str:
    """The order id a failed PlaceOrder names in its ResourceInfo."""
    [info] = details(error, error_details_pb2.ResourceInfo)
    assert info.resource_type == "shop.order.v1.Order"
    return str(info.resource_name)


def steps(order: Any) -> list[tuple[str, str]]:
    return [(s.name, order_pb2.SagaStepStatus.Name(s.status)[17:]) for s in order.saga]


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def test_an_order_is_reserved_charged_and_shipped(
    orders: Any, payments: Any, inventory: Any
) -> None:
    before = await available(inventory)
    order = (await orders.PlaceOrder(place(), timeout=10)).order
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert steps(order) == [
        ("reserve_stock", "DONE"),
        ("charge_payment", "DONE"),
        ("create_shipment", "DONE"),
    ]
    assert order.payment_id.startswith("pay-")
    assert order.shipment_id.startswith("shp-")
    [payment] = await charged(payments, order.order_id)
    assert payment.status == payment_pb2.PAYMENT_STATUS_CHARGED
    assert (payment.amount.units, payment.amount.currency_code) == (24, "USD")
    assert await available(inventory) == before - 2


async def test_a_declined_payment_releases_the_stock(
    orders: Any, payments: Any, inventory: Any
) -> None:
    before = await available(inventory)
    error = await refused(orders.PlaceOrder(place(customer="mallory"), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    [failure] = details(error, error_details_pb2.PreconditionFailure)
    assert [v.type for v in failure.violations] == ["PAYMENT_DECLINED"]
    order_id = failed_order(error)
    order = (await orders.GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert order.status == order_pb2.ORDER_STATUS_CANCELLED
    assert steps(order) == [
        ("reserve_stock", "COMPENSATED"),
        ("charge_payment", "FAILED"),
        ("create_shipment", "PENDING"),
    ]
    assert await charged(payments, order_id) == []
    assert await available(inventory) == before


async def test_a_refused_shipment_refunds_and_releases(
    orders: Any, payments: Any, inventory: Any
) -> None:
    before = await available(inventory)
    error = await refused(orders.PlaceOrder(place(country="AQ"), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    [failure] = details(error, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("SHIPMENT_REFUSED", "AQ")]
    order_id = failed_order(error)
    order = (await orders.GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert order.status == order_pb2.ORDER_STATUS_CANCELLED
    assert steps(order) == [
        ("reserve_stock", "COMPENSATED"),
        ("charge_payment", "COMPENSATED"),
        ("create_shipment", "FAILED"),
    ]
    [payment] = await charged(payments, order_id)
    assert payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    assert await available(inventory) == before


async def test_an_order_process_killed_mid_saga_is_finished_after_its_restart(
    mesh: MeshHarness, orders: Any, payments: Any, inventory: Any
) -> None:
    before = await available(inventory)
    watcher = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))  # type: ignore[no-untyped-call]
    placing = asyncio.ensure_future(orders.PlaceOrder(place(), timeout=10))
    order_id = ""

    async def charged_and_shipping() -> bool:
        nonlocal order_id
        listed = await watcher.ListOrders(order_pb2.ListOrdersRequest(customer_id="alice"))
        pending = [o for o in listed.orders if o.status == order_pb2.ORDER_STATUS_PENDING]
        for order in pending:
            if dict(steps(order))["charge_payment"] == "DONE":
                order_id = order.order_id
                return True
        return False

    await until(charged_and_shipping, "the charge is done and the shipment on its way")
    instance = mesh.instances["order-1"]
    assert instance.pid is not None
    os.kill(instance.pid, signal.SIGKILL)  # while CreateShipment is in flight
    await instance.wait()
    error = await refused(placing)
    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

    await mesh.start_one("order", "order-1")

    async def final() -> bool:
        got = await watcher.GetOrder(order_pb2.GetOrderRequest(order_id=order_id))
        return bool(got.order.status != order_pb2.ORDER_STATUS_PENDING)

    await until(final, "the restarted process finished the saga")
    order = (await watcher.GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED, steps(order)
    assert steps(order) == [
        ("reserve_stock", "DONE"),
        ("charge_payment", "DONE"),
        ("create_shipment", "DONE"),
    ]
    [payment] = await charged(payments, order_id)  # exactly one charge
    assert payment.status == payment_pb2.PAYMENT_STATUS_CHARGED
    assert await available(inventory) == before - 2  # reserved once
