"""What inventory learns from product's events (services.inventory.products.learner),
handed Events directly, on a tmp_path store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.type import money_pb2
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.product.v1 import events_pb2 as product_events

from mesh.events import Event
from services.common.messaging import new_event
from services.inventory.domain import StockLevel
from services.inventory.products import created_product_id, learner
from services.inventory.store import InventoryStore

OPENING = {"sku-open": 7}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InventoryStore]:
    store = InventoryStore(tmp_path / "inventory.db")
    yield store
    store.close()


def created(product_id: str) -> Event:
    message = product_events.ProductCreated(
        product_id=product_id, name="Thing", price=money_pb2.Money(currency_code="EUR", units=3)
    )
    return new_event(f"product-{product_id}", 1, message)


async def test_a_product_created_is_known_with_its_opening_stock(store: InventoryStore) -> None:
    woken: list[str] = []
    learn = learner(store, OPENING, lambda: woken.append("woken"))
    await learn(created("sku-open"))
    await learn(created("sku-plain"))
    assert store.knows("sku-open")
    assert store.knows("sku-plain")
    assert store.stock("sku-open") == StockLevel("sku-open", on_hand=7)
    assert store.stock("sku-plain") == StockLevel("sku-plain")
    assert woken == ["woken", "woken"]


async def test_the_same_product_created_twice_has_one_effect(store: InventoryStore) -> None:
    learn = learner(store, OPENING, lambda: None)
    event = created("sku-open")
    await learn(event)
    store.adjust("sku-open", -2, "sold")
    await learn(event)  # redelivered
    await learn(created("sku-open"))  # republished with another id
    assert store.stock("sku-open") == StockLevel("sku-open", on_hand=5)


@pytest.mark.parametrize(
    "event",
    [
        new_event("stock-x", 1, inventory_events.StockChanged(product_id="x")),  # another type
        Event("e1", "product-x", "shop.product.v1.ProductCreated", b"\xff\xff", 1.0, 1),
        new_event("product-X", 1, product_events.ProductCreated(product_id="Not An Id!")),
    ],
    ids=["other-type", "unreadable", "malformed-id"],
)
async def test_other_events_are_ignored(store: InventoryStore, event: Event) -> None:
    assert created_product_id(event) is None
    await learner(store, OPENING, lambda: None)(event)
    assert store.database.query("SELECT COUNT(*) FROM known_products") == [(0,)]
