"""Entrypoint: `python -m services.inventory --config mesh.yaml`."""

from __future__ import annotations

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from mesh.server import Runtime, run_service
from services.common.messaging import consume, relay_outbox
from services.inventory import products
from services.inventory.servicer import InventoryServicer
from services.inventory.settings import InventorySettings
from services.inventory.store import InventoryStore

__all__ = ["CATCH_UP_SECONDS", "main", "setup"]

CATCH_UP_SECONDS = 5.0
"""Longest an instance waits, before it serves, to catch up with product's events."""


async def setup(rt: Runtime) -> None:
    """Open the stock database (shared by every instance), publish its events on topic
    "inventory" (relaying its outbox, woken after each change), learn products from
    topic "product", and serve InventoryService once caught up with it (or after
    CATCH_UP_SECONDS)."""
    settings: InventorySettings = rt.settings.service_settings
    store = InventoryStore(rt.data_dir / "inventory.db")
    rt.on_close(store.close)
    outbox = relay_outbox(rt, store.database)  # registered after the store: stops before it
    # A product learnt before its opening stock was set gets it now; the others get
    # theirs when inventory learns them.
    for product_id, on_hand in settings.opening_stock.items():
        store.open_stock(product_id, on_hand, products.OPENING_REASON)
    outbox.notify()
    learn = products.learner(store, settings.opening_stock, outbox.notify)
    consume(rt, products.TOPIC, products.CONSUMER, learn)
    await products.catch_up(rt, CATCH_UP_SECONDS)
    rt.add_service(
        inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
        InventoryServicer(store, on_changed=outbox.notify),
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
    )


def main() -> int:
    return run_service("inventory", setup, settings=InventorySettings)


if __name__ == "__main__":
    raise SystemExit(main())
