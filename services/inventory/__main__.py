"""Entrypoint: `python -m services.inventory --config mesh.yaml`."""

from __future__ import annotations

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from mesh.server import Runtime, run_service
from services.inventory.servicer import InventoryServicer
from services.inventory.settings import InventorySettings
from services.inventory.store import InventoryStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the stock database (shared by every instance) and serve InventoryService."""
    settings: InventorySettings = rt.settings.service_settings
    store = InventoryStore(rt.data_dir / "inventory.db")
    rt.on_close(store.close)
    for product_id, on_hand in settings.opening_stock.items():
        store.open_stock(product_id, on_hand, "opening stock (inventory's settings in mesh.yaml)")
    rt.add_service(
        inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
        InventoryServicer(store),
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
    )


def main() -> int:
    return run_service("inventory", setup, settings=InventorySettings)


if __name__ == "__main__":
    raise SystemExit(main())
