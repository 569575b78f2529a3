"""Entrypoint: `python -m services.order --config mesh.yaml`."""

from __future__ import annotations

from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.server import Runtime, run_service
from mesh.tasks import cancel_and_wait, start_background
from services.order.clients import GrpcCatalog, GrpcInventory
from services.order.servicer import OrderServicer
from services.order.store import OrderStore
from services.order.sweeper import RESERVE_TIMEOUT, HoldSweeper

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the order database and serve OrderService, calling product and inventory
    through the mesh client; sweep stock holds left behind in the background."""
    store = OrderStore(rt.data_dir / "order.db")
    rt.on_close(store.close)
    inventory = GrpcInventory(rt.client.channel("inventory"), timeout=RESERVE_TIMEOUT)
    servicer = OrderServicer(
        store, GrpcCatalog(rt.client.channel("product")), inventory, caller_of=rt.caller_of
    )
    sweeping = start_background(HoldSweeper(store, inventory).run(), "stock hold sweeper")
    rt.on_close(lambda: cancel_and_wait(sweeping))  # before the store closes
    rt.add_service(
        order_pb2.DESCRIPTOR.services_by_name["OrderService"],
        servicer,
        order_pb2_grpc.add_OrderServiceServicer_to_server,
    )


def main() -> int:
    return run_service("order", setup)


if __name__ == "__main__":
    raise SystemExit(main())
