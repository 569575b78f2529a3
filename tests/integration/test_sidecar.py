"""The sidecar data plane end to end: real Envoys fed by the real control plane, real
etcd, real service processes. Calls pass both sidecars, the callee sees the caller's
identity, the inbound sidecar enforces the authz table, and an authz change applies to
an already open connection."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.registry import authz_key, encode_authz
from mesh.supervisor import EtcdServer
from tests.harness.mesh import MeshHarness, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def sidecars(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("sc"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"product": 1, "inventory": 1, "order": 1},
        dataplane="sidecar",
    )
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        yield mesh
    finally:
        await mesh.aclose()


def _admin(mesh: MeshHarness, instance_id: str) -> str:
    endpoint = mesh.instances[instance_id].endpoint
    assert endpoint is not None
    return endpoint.metadata["envoy_admin"]


def _get(admin: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{admin}{path}", timeout=5) as response:
        return str(response.read().decode())


def _counter(admin: str, name: str) -> int:
    for line in _get(admin, f"/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


async def _order(mesh: MeshHarness, customer: str) -> order_pb2.PlaceOrderResponse:
    stub = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))
    return await stub.PlaceOrder(
        order_pb2.PlaceOrderRequest(
            customer_id=customer,
            request_id=f"req-{customer}-{time.monotonic_ns()}",
            items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)],
        ),
        timeout=10,
    )


async def test_a_call_passes_both_sidecars(sidecars: MeshHarness) -> None:
    order_admin, inventory_admin = _admin(sidecars, "order-1"), _admin(sidecars, "inventory-1")
    out_name = "cluster.inventory_v1.upstream_rq_completed"
    in_name = "http.inbound.downstream_rq_completed"
    before_out, before_in = _counter(order_admin, out_name), _counter(inventory_admin, in_name)
    await _order(sidecars, "cust-sidecar")
    assert _counter(order_admin, out_name) > before_out  # order's sidecar sent it
    assert _counter(inventory_admin, in_name) > before_in  # inventory's received it


async def test_the_registered_address_is_the_sidecars_and_speaks_mtls(
    sidecars: MeshHarness,
) -> None:
    endpoint = sidecars.instances["inventory-1"].endpoint
    assert endpoint is not None
    assert endpoint.metadata["dataplane"] == "sidecar"
    listeners = _get(_admin(sidecars, "inventory-1"), "/listeners?format=json")
    assert endpoint.address.rsplit(":", 1)[1] in listeners
    # A plaintext caller gets nowhere.
    async with grpc.aio.insecure_channel(endpoint.address) as channel:
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-mug"), timeout=3)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_the_app_listens_only_on_a_private_socket(sidecars: MeshHarness) -> None:
    run = sidecars.config.state_dir / "run"
    assert run.stat().st_mode & 0o777 == 0o700
    for suffix in ("app", "out"):
        assert (run / f"inventory-1.{suffix}").stat().st_mode & 0o777 == 0o600


async def test_the_inbound_sidecar_denies_a_caller_the_table_does_not_allow(
    sidecars: MeshHarness,
) -> None:
    """product may not call inventory: its calls stop at inventory's sidecar."""
    stub = inventory_pb2_grpc.InventoryServiceStub(sidecars.client("product").channel("inventory"))
    app_calls = "cluster.local_app.upstream_rq_total"
    admin = _admin(sidecars, "inventory-1")
    before = _counter(admin, app_calls)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-mug"), timeout=3)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _counter(admin, app_calls) == before  # the app never saw it
    assert _counter(admin, "http.inbound.rbac.denied") >= 1


async def test_an_authz_change_denies_the_next_call_on_an_open_connection(
    sidecars: MeshHarness,
) -> None:
    prefix = sidecars.config.etcd.prefix
    stub = inventory_pb2_grpc.InventoryServiceStub(sidecars.client("admin").channel("inventory"))
    request = inventory_pb2.GetStockRequest(product_id="sku-mug")
    await stub.GetStock(request, timeout=3)  # the connection is open now
    narrowed = [r for r in sidecars.config.authz if r.callers != ("admin",)]
    try:
        await sidecars.etcd.put(authz_key(prefix), encode_authz(narrowed))
        until = time.monotonic() + 1.0
        code = grpc.StatusCode.OK
        while time.monotonic() < until:
            try:
                await stub.GetStock(request, timeout=3)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                break
            await asyncio.sleep(0.02)
        assert code is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await sidecars.etcd.put(authz_key(prefix), encode_authz(sidecars.config.authz))
    await _until_ok(lambda: stub.GetStock(request, timeout=3))


async def _until_ok(call: object, timeout: float = 3.0) -> None:
    until = time.monotonic() + timeout
    while True:
        try:
            await call()  # type: ignore[operator]
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.05)
