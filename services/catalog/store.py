"""The catalog's read model in SQLite, `<data_dir>/catalog.db`, shared by the service's
instances (WAL, through mesh.storage.Database).

Two tables, one per topic it is built from, so the order in which the two topics'
events arrive does not matter: `catalog_products` from product's ProductCreated,
`catalog_stock` from inventory's StockChanged (a product's stock may be applied before
the product itself is); an item is a product joined with its stock, if any. The
`projection` (services.common.projection) applies each event once, in stream order,
and rebuilds both tables from the broker's log.

Reads are quick and never wait for a writer: call them on the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message
from shop.inventory.v1 import events_pb2 as inventory_events
from shop.product.v1 import events_pb2 as product_events

from mesh.events import Event
from mesh.storage import Database
from services.catalog.domain import CatalogItem, Cursor, Search, sort_key
from services.common.ids import RESOURCE_ID
from services.common.money import Money
from services.common.projection import PROJECTION_SCHEMA, Projection

__all__ = ["PROJECTION", "TOPICS", "CatalogStore"]

PROJECTION = "catalog"
"""The read model's name, also its consumer's name on the bus."""
TOPICS = ("product", "inventory")

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS catalog_products (
        product_id    TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        sort_key      TEXT NOT NULL,
        description   TEXT NOT NULL,
        currency_code TEXT NOT NULL,
        units         INTEGER NOT NULL,
        nanos         INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS catalog_products_order ON catalog_products (sort_key, product_id)",
    """
    CREATE TABLE IF NOT EXISTS catalog_stock (
        product_id TEXT PRIMARY KEY,
        available  INTEGER NOT NULL
    )
    """,
    *PROJECTION_SCHEMA,
)

_ITEM = (
    "SELECT p.product_id, p.name, p.description, p.currency_code, p.units, p.nanos,"
    " COALESCE(s.available, 0), p.sort_key"
    " FROM catalog_products p LEFT JOIN catalog_stock s ON s.product_id = p.product_id"
)
_PRODUCT_CREATED = product_events.ProductCreated.DESCRIPTOR.full_name
_STOCK_CHANGED = inventory_events.StockChanged.DESCRIPTOR.full_name

M = TypeVar("M", bound=Message)


class CatalogStore:
    """The read model: items by id and by search. Open with `CatalogStore(path)`; the
    schema is created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)
        self.projection = Projection(self._db, PROJECTION, TOPICS, apply_event, reset)
        """What keeps the tables up to date with the topics (and rebuilds them)."""

    def close(self) -> None:
        self._db.close()

    def item(self, product_id: str) -> CatalogItem | None:
        """The item of this product, or None if the read model has no such product."""
        rows = self._db.query(f"{_ITEM} WHERE p.product_id = ?", (product_id,))
        return _item(rows[0]) if rows else None

    def search(self, search: Search) -> tuple[list[CatalogItem], Cursor | None]:
        """One page of the items matching `search`, in its order, and where the next
        page starts if there are more (else None)."""
        where: list[str] = []
        parameters: list[object] = []
        for word in search.filter.words:
            where.append("instr(p.sort_key, ?) > 0")  # a substring, no LIKE wildcards
            parameters.append(word)
        if search.filter.currency is not None:
            where.append("p.currency_code = ?")
            parameters.append(search.filter.currency)
        # Prices and bounds are never negative: (units, nanos) compares as the amount.
        if search.filter.min_price is not None:
            where.append("(p.units, p.nanos) >= (?, ?)")
            parameters += [search.filter.min_price.units, search.filter.min_price.nanos]
        if search.filter.max_price is not None:
            where.append("(p.units, p.nanos) <= (?, ?)")
            parameters += [search.filter.max_price.units, search.filter.max_price.nanos]
        if search.filter.in_stock_only:
            where.append("COALESCE(s.available, 0) > 0")
        if search.after is not None:
            where.append("(p.sort_key, p.product_id) > (?, ?)")
            parameters += [search.after.sort_key, search.after.product_id]
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.query(
            f"{_ITEM}{condition} ORDER BY p.sort_key, p.product_id LIMIT ?",
            [*parameters, search.size + 1],
        )
        page = rows[: search.size]
        more = len(rows) > search.size
        last = Cursor(sort_key=page[-1][7], product_id=page[-1][0]) if more else None
        return [_item(row) for row in page], last


def apply_event(db: sqlite3.Connection, topic: str, event: Event) -> None:
    """Apply one event of the catalog's topics (services.common.projection.Apply).
    Events of other types change nothing: they say nothing the catalog shows.

    Raises:
        ValueError: the event does not parse, or says something impossible.
    """
    if event.type == _PRODUCT_CREATED:
        _apply_product(db, _parse(product_events.ProductCreated, event))
    elif event.type == _STOCK_CHANGED:
        _apply_stock(db, _parse(inventory_events.StockChanged, event))


def reset(db: sqlite3.Connection) -> None:
    """Empty the read model's tables (services.common.projection.Reset)."""
    db.execute("DELETE FROM catalog_products")
    db.execute("DELETE FROM catalog_stock")


def _parse(kind: Callable[[], M], event: Event) -> M:
    message = kind()
    try:
        message.ParseFromString(event.data)
    except DecodeError as error:
        raise ValueError(f"not a {event.type}: {error}") from error
    return message


def _apply_product(db: sqlite3.Connection, created: product_events.ProductCreated) -> None:
    _require_product_id(created.product_id)
    if not created.name.strip():
        raise ValueError("a product without a name")
    price = Money.from_proto(created.price)
    if not created.HasField("price") or price.price_violations("price"):
        raise ValueError(f"product {created.product_id}: no valid price")
    db.execute(
        "INSERT INTO catalog_products"
        " (product_id, name, sort_key, description, currency_code, units, nanos)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (product_id) DO UPDATE SET"
        " name = excluded.name, sort_key = excluded.sort_key,"
        " description = excluded.description, currency_code = excluded.currency_code,"
        " units = excluded.units, nanos = excluded.nanos",
        (
            created.product_id,
            created.name,
            sort_key(created.name),
            created.description,
            price.currency_code,
            price.units,
            price.nanos,
        ),
    )


def _apply_stock(db: sqlite3.Connection, changed: inventory_events.StockChanged) -> None:
    _require_product_id(changed.product_id)
    db.execute(
        "INSERT INTO catalog_stock (product_id, available) VALUES (?, ?)"
        " ON CONFLICT (product_id) DO UPDATE SET available = excluded.available",
        (changed.product_id, max(changed.available, 0)),
    )


def _require_product_id(product_id: str) -> None:
    if RESOURCE_ID.violations(product_id, "product_id"):
        raise ValueError(f"a malformed product id {product_id!r:.80}")


def _item(row: tuple[Any, ...]) -> CatalogItem:
    product_id, name, description, currency_code, units, nanos, available, _ = row
    return CatalogItem(
        product_id=product_id,
        name=name,
        description=description,
        price=Money(currency_code=currency_code, units=units, nanos=nanos),
        available=available,
    )
