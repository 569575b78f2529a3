"""services.product.store on a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from shop.product.v1 import events_pb2

from mesh.problems import AlreadyExists
from services.product.domain import PRODUCT, Money, Product
from services.product.store import ProductStore


def product(product_id: str) -> Product:
    return Product(product_id, f"name of {product_id}", "", Money("EUR", 1, 250_000_000))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "product.db"


@pytest.fixture
def store(path: Path) -> Iterator[ProductStore]:
    store = ProductStore(path)
    yield store
    store.close()


def test_added_product_reads_back(store: ProductStore) -> None:
    store.add(product("sku-1"))
    assert store.get("sku-1") == product("sku-1")
    assert store.get("sku-2") is None


def test_duplicate_id_is_already_exists(store: ProductStore) -> None:
    store.add(product("sku-1"))
    with pytest.raises(AlreadyExists) as error:
        store.add(product("sku-1"))
    assert (error.value.resource_type, error.value.name) == (PRODUCT, "sku-1")


def recorded(path: Path) -> list[tuple[str, str, int, str, bytes]]:
    """(topic, stream, version, type, data) of each event in the outbox, in order."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT topic, stream, version, type, data FROM outbox ORDER BY position"
        ).fetchall()


def test_an_added_product_records_its_product_created(path: Path, store: ProductStore) -> None:
    store.add(product("sku-1"))
    [(topic, stream, version, kind, data)] = recorded(path)
    assert (topic, stream, version) == ("product", "product-sku-1", 1)
    assert kind == "shop.product.v1.ProductCreated"
    created = events_pb2.ProductCreated.FromString(data)
    assert (created.product_id, created.name, created.description) == (
        "sku-1",
        "name of sku-1",
        "",
    )
    assert (created.price.currency_code, created.price.units, created.price.nanos) == (
        "EUR",
        1,
        250_000_000,
    )


def test_a_refused_duplicate_records_no_event(path: Path, store: ProductStore) -> None:
    store.add(product("sku-1"))
    with pytest.raises(AlreadyExists):
        store.add(product("sku-1"))
    assert len(recorded(path)) == 1


def test_pages_in_id_order(store: ProductStore) -> None:
    for product_id in ["c", "a", "e", "b", "d"]:
        store.add(product(product_id))
    first, after = store.page(after=None, limit=2)
    assert [p.product_id for p in first] == ["a", "b"]
    assert after == "b"
    second, after = store.page(after=after, limit=2)
    assert [p.product_id for p in second] == ["c", "d"]
    last, after = store.page(after=after, limit=2)
    assert [p.product_id for p in last] == ["e"]
    assert after is None


def test_a_full_last_page_has_no_continuation(store: ProductStore) -> None:
    store.add(product("a"))
    store.add(product("b"))
    assert store.page(after=None, limit=2)[1] is None


def test_two_stores_on_one_file_share_writes(path: Path, store: ProductStore) -> None:
    other = ProductStore(path)
    try:
        other.add(product("sku-1"))
        assert store.get("sku-1") == product("sku-1")
        with pytest.raises(AlreadyExists):
            store.add(product("sku-1"))
    finally:
        other.close()


def test_database_uses_wal(path: Path, store: ProductStore) -> None:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()
