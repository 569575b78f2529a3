"""Entrypoint: `python -m services.product --config mesh.yaml`."""

from __future__ import annotations

import contextlib

from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.problems import AlreadyExists
from mesh.server import Runtime, run_service
from services.common.messaging import relay_outbox
from services.product.domain import Money, new_product
from services.product.servicer import ProductServicer
from services.product.settings import DemoProduct, ProductSettings
from services.product.store import ProductStore

__all__ = ["main", "seed_demo", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the catalogue database, publish its events on topic "product" (relaying
    its outbox, woken after each product created, demo products included) and serve
    ProductService on it."""
    settings: ProductSettings = rt.settings.service_settings
    store = ProductStore(rt.data_dir / "product.db")
    rt.on_close(store.close)
    outbox = relay_outbox(rt, store.database)  # registered after the store: stops before it
    seed_demo(store, settings.demo_products)
    outbox.notify()
    rt.add_service(
        product_pb2.DESCRIPTOR.services_by_name["ProductService"],
        ProductServicer(store, version=rt.version, on_created=outbox.notify),
        product_pb2_grpc.add_ProductServiceServicer_to_server,
    )


def seed_demo(store: ProductStore, products: tuple[DemoProduct, ...]) -> None:
    """Create the demo products of product's settings that the catalogue lacks."""
    for demo in products:
        if store.get(demo.product_id) is not None:
            continue
        currency, units, nanos = demo.price_parts
        price = Money(currency_code=currency, units=units, nanos=nanos)
        product = new_product(
            product_id=demo.product_id, name=demo.name, description="", price=price
        )
        with contextlib.suppress(AlreadyExists):  # another instance seeded it first
            store.add(product)


def main() -> int:
    return run_service("product", setup, settings=ProductSettings)


if __name__ == "__main__":
    raise SystemExit(main())
