"""Client-side round-robin over the instances registered in etcd."""

from __future__ import annotations

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from tests.harness.mesh import MeshHarness
from tests.harness.metrics import scrape_instance, value

GET_STOCK = {
    "grpc_type": "unary",
    "grpc_service": "shop.inventory.v1.InventoryService",
    "grpc_method": "GetStock",
    "grpc_code": "OK",
}


def _handled(mesh: MeshHarness) -> dict[str, float]:
    counts = {}
    for instance in mesh.instances.values():
        if instance.spec.name == "inventory":
            counts[instance.instance_id] = value(
                scrape_instance(instance), "grpc_server_handled_total", **GET_STOCK
            )
    return counts


async def test_hundred_calls_land_on_both_instances_evenly(shop: MeshHarness) -> None:
    stub = inventory_pb2_grpc.InventoryServiceStub(shop.client().channel("inventory"))
    before = _handled(shop)
    assert len(before) == 2

    for _ in range(100):
        await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-balance"))

    after = _handled(shop)
    shares = {instance: after[instance] - before[instance] for instance in before}
    assert sum(shares.values()) == 100
    for instance, share in shares.items():
        assert 45 <= share <= 55, f"{instance} took {share} of 100 calls: {shares}"
