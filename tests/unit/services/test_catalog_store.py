"""The catalog's read model on a real SQLite file: events applied through its
projection, in any order across topics and once each, searched and paged, and
rebuilt from a log to the same state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.type import money_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.product.v1 import events_pb2 as product_events

from mesh.events import Event
from services.catalog.domain import CatalogItem, Cursor, Search, SearchFilter
from services.catalog.store import CatalogStore
from services.common.messaging import new_event
from services.common.money import Money


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    store = CatalogStore(tmp_path / "catalog.db")
    yield store
    store.close()


def created(product_id: str, name: str, units: int, currency: str = "USD") -> Event:
    message = product_events.ProductCreated(
        product_id=product_id,
        name=name,
        description=f"about {name}",
        price=money_pb2.Money(currency_code=currency, units=units),
    )
    return new_event(f"product-{product_id}", 1, message)


def stocked(product_id: str, version: int, available: int) -> Event:
    message = inventory_events.StockChanged(
        product_id=product_id, on_hand=available, available=available, cause="adjusted"
    )
    return new_event(f"stock-{product_id}", version, message)


def apply(store: CatalogStore, *events: Event) -> list[bool]:
    return [
        store.projection.handle("product" if e.stream.startswith("product-") else "inventory", e)
        for e in events
    ]


def everything(store: CatalogStore, search_filter: SearchFilter | None = None) -> list[str]:
    """The ids of every item the filter matches (all, if None), page by page (2 a page)."""
    search_filter = search_filter or SearchFilter()
    ids: list[str] = []
    after: Cursor | None = None
    while True:
        items, after = store.search(Search(search_filter, 2, after))
        ids += [item.product_id for item in items]
        if after is None:
            return ids


def test_a_product_shows_with_its_stock(store: CatalogStore) -> None:
    apply(store, created("sku-mug", "Mug", 12), stocked("sku-mug", 1, 5))
    assert store.item("sku-mug") == CatalogItem(
        "sku-mug", "Mug", "about Mug", Money("USD", 12, 0), available=5
    )
    assert store.item("sku-none") is None


def test_stock_applied_before_its_product_shows_once_the_product_does(
    store: CatalogStore,
) -> None:
    apply(store, stocked("sku-mug", 1, 3))
    assert store.item("sku-mug") is None
    apply(store, created("sku-mug", "Mug", 12))
    item = store.item("sku-mug")
    assert item is not None
    assert item.available == 3


def test_an_event_applied_twice_or_out_of_date_changes_nothing(store: CatalogStore) -> None:
    first, renamed = created("sku-mug", "Mug", 12), created("sku-mug", "Renamed", 1)
    assert apply(store, first, first, renamed) == [True, False, False]
    assert apply(store, stocked("sku-mug", 2, 9), stocked("sku-mug", 1, 4)) == [True, False]
    item = store.item("sku-mug")
    assert item is not None
    assert (item.name, item.available) == ("Mug", 9)
    assert store.projection.applied() == 2


def test_an_unreadable_event_is_skipped(store: CatalogStore) -> None:
    garbage = Event("e1", "product-x", "shop.product.v1.ProductCreated", b"\xff", 1.0, 1)
    nameless = created("sku-a", " ", 3)
    assert apply(store, garbage, nameless, created("sku-b", "B", 3)) == [True, True, True]
    assert everything(store) == ["sku-b"]


def test_search_orders_by_name_then_id_ignoring_case(store: CatalogStore) -> None:
    apply(
        store,
        created("sku-3", "banana", 1),
        created("sku-2", "Apple", 1),
        created("sku-1", "apple", 1),
        created("sku-4", "Cherry", 1),
        created("sku-5", "apricot", 1),
    )
    assert everything(store) == ["sku-1", "sku-2", "sku-5", "sku-3", "sku-4"]


def test_filters_combine(store: CatalogStore) -> None:
    apply(
        store,
        created("sku-mug", "Stoneware Mug", 12),
        created("sku-big", "Big mug, stoneware", 30),
        created("sku-cup", "Stoneware cup", 8),
        created("sku-eur", "Stoneware mug (EU)", 10, currency="EUR"),
        stocked("sku-big", 1, 2),
        stocked("sku-mug", 1, 0),
    )
    assert everything(store, SearchFilter(words=("stoneware", "mug"))) == [
        "sku-big",
        "sku-mug",
        "sku-eur",
    ]
    assert everything(store, SearchFilter(words=("mug",), in_stock_only=True)) == ["sku-big"]
    in_dollars = SearchFilter(min_price=Money("USD", 10, 0), max_price=Money("USD", 12, 0))
    assert everything(store, in_dollars) == ["sku-mug"]
    assert everything(store, SearchFilter(max_price=Money("EUR", 100, 0))) == ["sku-eur"]
    assert everything(store, SearchFilter(words=("%",))) == []  # no LIKE wildcards


def test_a_full_last_page_has_no_continuation(store: CatalogStore) -> None:
    apply(store, created("sku-a", "A", 1), created("sku-b", "B", 1))
    items, after = store.search(Search(SearchFilter(), 2, None))
    assert [item.product_id for item in items] == ["sku-a", "sku-b"]
    assert after is None


async def test_a_rebuild_from_the_log_gives_the_same_model(store: CatalogStore) -> None:
    log = {
        "product": [created("sku-a", "A", 1), created("sku-b", "B", 2), created("sku-a", "X", 9)],
        "inventory": [stocked("sku-a", 1, 4), stocked("sku-a", 2, 3), stocked("sku-b", 1, 1)],
    }
    for topic, events in log.items():
        for event in events:
            store.projection.handle(topic, event)
    live = [store.item(product_id) for product_id in everything(store)]

    class Log:
        async def history(self, topic: str | None = None) -> list[Event]:
            return log[topic or ""]

    replayed = await store.projection.rebuild(Log())  # type: ignore[arg-type]

    assert replayed == 5  # the republished sku-a (version 1 again) counts once
    assert [store.item(product_id) for product_id in everything(store)] == live
