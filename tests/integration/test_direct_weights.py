"""Version weights on the proxyless data plane, from etcd as `meshctl traffic` writes
them: product runs a v1 and a v2 instance, and the live split decides which answers.
Smooth weighted round-robin is deterministic, so the shares are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.registry import LivePolicy, encode_weights, traffic_key
from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.metrics import scrape_instance, value

pytestmark = pytest.mark.integration

CALLS = 500
V1, V2 = "product-v1", "product-v2"


def handled(mesh: MeshHarness, method: str) -> dict[str, float]:
    """Calls of ProductService `method` each product instance answered OK."""
    labels = {
        "grpc_type": "unary",
        "grpc_service": "shop.product.v1.ProductService",
        "grpc_method": method,
        "grpc_code": "OK",
    }
    return {
        instance_id: value(
            scrape_instance(mesh.instances[instance_id]), "grpc_server_handled_total", **labels
        )
        for instance_id in (V1, V2)
    }


async def until(predicate: Callable[[], bool], what: str, polls: int = 500) -> None:
    """Poll `predicate` every 20 ms, for at most about 10 s."""
    for _ in range(polls):
        if predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"no {what} after {polls * 0.02:.0f} s")


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    """product v1 and v2 (one instance each), inventory, order and what order's saga
    calls (payment, shipping)."""
    config = write_config(
        tmp_path_factory.mktemp("weights"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={"product": 1, "inventory": 1, "order": 1, "payment": 1, "shipping": 1},
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        started = [
            harness.spawn("product", V1, version="v1"),
            harness.spawn("product", V2, version="v2"),
            harness.spawn("inventory", "inventory-1"),
            harness.spawn("order", "order-1"),
            harness.spawn("payment", "payment-1"),
            harness.spawn("shipping", "shipping-1"),
        ]
        await asyncio.gather(*(instance.start() for instance in started))
        await asyncio.gather(*(instance.wait_ready(harness.etcd) for instance in started))
        await harness.until_stocked()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def live(mesh: MeshHarness) -> LivePolicy:
    return mesh.live_policy()


async def split(mesh: MeshHarness, live: LivePolicy, weights: Mapping[str, int] | None) -> None:
    """Write product's live split (None: remove it), and wait until `live` has it."""
    key = traffic_key(mesh.config.etcd.prefix, "product")
    if weights is None:
        await mesh.etcd.delete(key)
    else:
        await mesh.etcd.put(key, encode_weights(weights))
    await until(lambda: live.weights.get("product") == weights, f"live weights {weights}")


@pytest.mark.parametrize(
    ("weights", "to_v2"),
    [({"v1": 0, "v2": 100}, CALLS), ({"v1": 100, "v2": 0}, 0), ({"v1": 80, "v2": 20}, CALLS // 5)],
    ids=["0/100", "100/0", "80/20"],
)
async def test_a_live_split_decides_which_version_answers(
    mesh: MeshHarness, live: LivePolicy, weights: dict[str, int], to_v2: int
) -> None:
    await split(mesh, live, weights)
    stub = product_pb2_grpc.ProductServiceStub(mesh.client(live=live).channel("product"))
    before = handled(mesh, "GetProduct")

    for _ in range(CALLS):
        await stub.GetProduct(product_pb2.GetProductRequest(product_id="sku-mug"))

    after = handled(mesh, "GetProduct")
    shares = {instance: after[instance] - before[instance] for instance in before}
    assert shares == {V1: CALLS - to_v2, V2: to_v2}


async def test_without_a_split_both_versions_get_an_equal_share(
    mesh: MeshHarness, live: LivePolicy
) -> None:
    await split(mesh, live, {"v1": 0, "v2": 100})
    stub = product_pb2_grpc.ProductServiceStub(mesh.client(live=live).channel("product"))
    await stub.GetProduct(product_pb2.GetProductRequest(product_id="sku-mug"))  # to v2
    await split(mesh, live, None)
    before = handled(mesh, "GetProduct")

    for _ in range(100):
        await stub.GetProduct(product_pb2.GetProductRequest(product_id="sku-mug"))

    after = handled(mesh, "GetProduct")
    assert {instance: after[instance] - before[instance] for instance in before} == {V1: 50, V2: 50}


async def test_an_instance_follows_the_live_split_in_its_own_calls(
    mesh: MeshHarness, live: LivePolicy
) -> None:
    """order calls product (BatchGetProducts) through its runtime's client, which follows
    the same etcd key as everyone."""
    orders = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))
    request = order_pb2.PlaceOrderRequest(
        customer_id="weights", items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)]
    )
    await split(mesh, live, {"v1": 0, "v2": 100})
    # The order instance hears of it on its own watch: wait until its calls show it.
    for _ in range(100):
        before = handled(mesh, "BatchGetProducts")
        await orders.PlaceOrder(request, timeout=10)
        after = handled(mesh, "BatchGetProducts")
        if after[V2] > before[V2]:
            break
        await asyncio.sleep(0.05)
    before = handled(mesh, "BatchGetProducts")

    for _ in range(10):
        await orders.PlaceOrder(request, timeout=10)

    after = handled(mesh, "BatchGetProducts")
    assert {instance: after[instance] - before[instance] for instance in before} == {V1: 0, V2: 10}
