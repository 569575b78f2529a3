"""Entrypoint: `python -m services.catalog --config mesh.yaml`."""

from __future__ import annotations

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from mesh.server import Runtime, run_service
from services.catalog.commands import CatalogCommands
from services.catalog.queries import CatalogQueries
from services.catalog.servicer import CatalogServicer
from services.catalog.store import CatalogStore
from services.common.messaging import follow

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the read model (shared by every instance), keep it following topics
    "product" and "inventory" (its lag in /metrics), and serve CatalogService."""
    store = CatalogStore(rt.data_dir / "catalog.db")
    rt.on_close(store.close)
    follow(rt, store.projection)  # registered after the store: stops before it closes
    rt.add_service(
        catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"],
        CatalogServicer(
            CatalogQueries(store, rt.event_bus),
            CatalogCommands(store.projection, rt.event_bus),
        ),
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
    )


def main() -> int:
    return run_service("catalog", setup)


if __name__ == "__main__":
    raise SystemExit(main())
