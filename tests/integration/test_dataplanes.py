"""The same behaviour from both data planes: each test runs once against a proxyless
mesh (`direct`) and once against a mesh of sidecars (`sidecar`).

The test's own client is the admin identity calling order where it registered (the
app itself, or its inbound sidecar); what is under test is how order's own calls reach
product and inventory: balanced over the instances, moved off an instance that dies,
denied as soon as the live authz table says so, and bounded by the caller's deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.registry import authz_key, encode_authz
from mesh.supervisor import EtcdServer
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.metrics import scrape_instance, value
from tests.harness.nats import nats_server

pytestmark = pytest.mark.integration

RESERVE = {"grpc_service": "shop.inventory.v1.InventoryService", "grpc_method": "ReserveStock"}


@pytest.fixture(scope="module", params=["direct", "sidecar"])
async def shop(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
) -> AsyncIterator[MeshHarness]:
    root = tmp_path_factory.mktemp(request.param[:3])
    async with nats_server(root / "broker") as broker:  # one per data plane's mesh
        config = write_config(
            root,
            etcd_endpoint=etcd.endpoint,
            certs_dir=certs_dir,
            replicas={"product": 1, "inventory": 2, "order": 1, "payment": 1, "shipping": 1},
            dataplane=request.param,
            events_endpoint=broker.endpoint,
        )
        mesh = MeshHarness(config, etcd.endpoint)
        try:
            await mesh.start()
            stock = inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))
            await stock.AdjustStock(
                inventory_pb2.AdjustStockRequest(
                    product_id="sku-mug", delta=1_000_000, reason="load"
                )
            )
            yield mesh
        finally:
            await mesh.aclose()


def _place(mesh: MeshHarness) -> Callable[..., Awaitable[object]]:
    orders = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))

    def place(timeout: float = 10.0) -> Awaitable[object]:
        return orders.PlaceOrder(  # type: ignore[no-any-return]
            order_pb2.PlaceOrderRequest(
                customer_id="planes",
                request_id=uuid.uuid4().hex,
                items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)],
            ),
            timeout=timeout,
        )

    return place


def _reserved_ok(mesh: MeshHarness, instance_id: str) -> float:
    samples = scrape_instance(mesh.instances[instance_id])
    return value(samples, "grpc_server_handled_total", grpc_type="unary", grpc_code="OK", **RESERVE)


async def test_calls_to_a_service_are_spread_over_its_instances(shop: MeshHarness) -> None:
    before = {i: _reserved_ok(shop, i) for i in ("inventory-1", "inventory-2")}
    place = _place(shop)
    for _ in range(40):
        await place()
    served = {i: _reserved_ok(shop, i) - before[i] for i in before}
    assert sum(served.values()) == 40
    assert min(served.values()) >= 10, served  # round-robin, on either side of Envoy


async def test_an_instance_killed_under_load_fails_no_call(shop: MeshHarness) -> None:
    """kill -9 of inventory-2 (and so of its sidecar): order's reservations, which are
    idempotent, go to inventory-1; no PlaceOrder fails."""
    place = _place(shop)
    ok, failures = 0, []
    stop = asyncio.Event()

    async def loop() -> None:
        nonlocal ok
        while not stop.is_set():
            try:
                await place()
                ok += 1
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")

    workers = [asyncio.create_task(loop()) for _ in range(3)]
    try:
        await _until(lambda: ok >= 20, "calls flow")
        os.kill(shop.instances["inventory-2"].pid, signal.SIGKILL)
        await shop.instances["inventory-2"].wait()
        started = ok
        await _until(lambda: ok >= started + 60, "calls go on without inventory-2")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    await shop.start_one("inventory", "inventory-2")  # for the tests after this one


async def test_an_authz_change_denies_the_next_call_on_an_open_connection(
    shop: MeshHarness,
) -> None:
    prefix = shop.config.etcd.prefix
    stub = inventory_pb2_grpc.InventoryServiceStub(shop.client().channel("inventory"))
    request = inventory_pb2.GetStockRequest(product_id="sku-mug")
    await stub.GetStock(request, timeout=3)  # connections open now
    narrowed = [rule for rule in shop.config.authz if rule.callers != ("admin",)]
    await shop.etcd.put(authz_key(prefix), encode_authz(narrowed))
    try:
        changed = time.monotonic()
        code = grpc.StatusCode.OK
        while code is grpc.StatusCode.OK and time.monotonic() < changed + 1.0:
            try:
                await stub.GetStock(request, timeout=3)
                await asyncio.sleep(0.02)
            except grpc.aio.AioRpcError as error:
                code = error.code()
        assert code is grpc.StatusCode.PERMISSION_DENIED  # within 1 s of the change
    finally:
        await shop.etcd.put(authz_key(prefix), encode_authz(shop.config.authz))
    # Every instance's table must be back (each sidecar applies it on its own push)
    # before the next test calls through them.
    orders = order_pb2_grpc.OrderServiceStub(shop.client().channel("order"))
    until = time.monotonic() + 5
    while True:
        try:
            await stub.GetStock(request, timeout=3)
            await orders.ListOrders(order_pb2.ListOrdersRequest(page_size=1), timeout=3)
            break
        except grpc.aio.AioRpcError:
            assert time.monotonic() < until, "the restored table never applied"
            await asyncio.sleep(0.05)


async def test_the_callers_deadline_bounds_the_whole_chain(shop: MeshHarness) -> None:
    place = _place(shop)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await place(timeout=0.005)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    await place()  # and a call with time enough goes through


async def _until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    until = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < until, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)
