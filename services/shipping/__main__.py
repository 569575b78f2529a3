"""Entrypoint: `python -m services.shipping --config mesh.yaml`."""

from __future__ import annotations

from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from mesh.server import Runtime, run_service
from services.shipping.servicer import ShippingServicer
from services.shipping.settings import ShippingSettings
from services.shipping.store import ShippingStore

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the shipments database (shared by every instance) and serve ShippingService,
    pacing, refusing and delaying shipments as shipping's settings in mesh.yaml say."""
    settings: ShippingSettings = rt.settings.service_settings
    store = ShippingStore(rt.data_dir / "shipping.db")
    rt.on_close(store.close)
    rt.add_service(
        shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"],
        ShippingServicer(store, settings),
        shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
    )


def main() -> int:
    return run_service("shipping", setup, settings=ShippingSettings)


if __name__ == "__main__":
    raise SystemExit(main())
