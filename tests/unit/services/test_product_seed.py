"""Demo products from product's settings are created once, and never overwrite the
catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.product.__main__ import seed_demo
from services.product.domain import Money, new_product
from services.product.settings import DemoProduct
from services.product.store import ProductStore

DEMO = (
    DemoProduct(product_id="sku-espresso", name="Espresso", price="24.50 USD"),
    DemoProduct(product_id="sku-mug", name="Mug", price="12 EUR"),
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProductStore]:
    store = ProductStore(tmp_path / "product.db")
    try:
        yield store
    finally:
        store.close()


def test_missing_demo_products_are_created_with_their_prices(store: ProductStore) -> None:
    seed_demo(store, DEMO)
    espresso, mug = store.get("sku-espresso"), store.get("sku-mug")
    assert espresso is not None
    assert mug is not None
    assert espresso.price == Money(currency_code="USD", units=24, nanos=500_000_000)
    assert mug.price == Money(currency_code="EUR", units=12, nanos=0)


def test_existing_products_are_left_as_they_are(store: ProductStore) -> None:
    price = Money(currency_code="USD", units=99, nanos=0)
    store.add(
        new_product(product_id="sku-mug", name="Changed by a user", description="", price=price)
    )
    seed_demo(store, DEMO)
    seed_demo(store, DEMO)  # restarts seed again: nothing changes
    mug = store.get("sku-mug")
    assert mug is not None
    assert mug.name == "Changed by a user"
    assert store.page(after=None, limit=10)[0][0].product_id == "sku-espresso"
    assert len(store.page(after=None, limit=10)[0]) == 2


def test_each_demo_product_created_is_published_once(store: ProductStore) -> None:
    seed_demo(store, DEMO)
    seed_demo(store, DEMO)
    rows = store.database.query("SELECT stream, version FROM outbox ORDER BY position")
    assert rows == [("product-sku-espresso", 1), ("product-sku-mug", 1)]
