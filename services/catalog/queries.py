"""The catalog's queries: searches and lookups on the read model, and how far behind
the events it is. They never change anything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mesh.events import EventBus
from mesh.problems import NotFound
from services.catalog import domain
from services.catalog.domain import CatalogItem, Search
from services.catalog.store import CatalogStore
from services.common.projection import ProjectionStatus, projection_status

__all__ = ["CatalogQueries", "Page"]


@dataclass(frozen=True)
class Page:
    """One page of a search, and the token of the next ("" if it is the last)."""

    items: list[CatalogItem]
    next_page_token: str


class CatalogQueries:
    """Reads of the read model; `bus` gives the mesh's event bus (Runtime.event_bus)."""

    def __init__(self, store: CatalogStore, bus: Callable[[], Awaitable[EventBus]]) -> None:
        self._store = store
        self._bus = bus

    def search(self, search: Search) -> Page:
        """One page of the items `search` matches."""
        items, last = self._store.search(search)
        token = domain.encode_page_token(search.filter, last) if last else ""
        return Page(items=items, next_page_token=token)

    def item(self, product_id: str) -> CatalogItem:
        """The item of `product_id`.

        Raises:
            NotFound: the read model has no such product.
        """
        found = self._store.item(product_id)
        if found is None:
            raise NotFound(domain.CATALOG_ITEM, product_id)
        return found

    async def status(self) -> ProjectionStatus:
        """How far behind the broker the read model is (raises as projection_status)."""
        return await projection_status(self._store.projection, self._bus)
