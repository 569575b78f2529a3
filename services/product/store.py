"""The catalogue's SQLite database, `<data_dir>/product.db`.

Every instance of the service opens the same file through a `mesh.storage.Database`,
and each write is one short write transaction. Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.

The file also holds the service's outbox (services.common.outbox): a product's
ProductCreated event (topic TOPIC, stream "product-<id>", version 1) is recorded in
the transaction that inserts it, for the service to relay to the bus
(services.common.messaging.relay_outbox on `database`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from shop.product.v1 import events_pb2

from mesh.events import Event
from mesh.problems import AlreadyExists
from mesh.storage import Database
from services.common.messaging import new_event
from services.common.outbox import OUTBOX_SCHEMA, record
from services.product.domain import PRODUCT, Money, Product

__all__ = ["TOPIC", "ProductStore"]

TOPIC = "product"
"""The topic product's events are published on."""

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS products (
        product_id    TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        description   TEXT NOT NULL,
        currency_code TEXT NOT NULL,
        units         INTEGER NOT NULL,
        nanos         INTEGER NOT NULL
    )
    """,
    *OUTBOX_SCHEMA,
)

_COLUMNS = "product_id, name, description, currency_code, units, nanos"


class ProductStore:
    """Products by id. Open with `ProductStore(path)`; the schema is created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)

    @property
    def database(self) -> Database:
        """The SQLite file, whose outbox holds the events to publish."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def add(self, product: Product) -> None:
        """Store a new product, and its ProductCreated event in the outbox.

        Raises:
            AlreadyExists: a product with this id is stored already (nothing recorded).
        """
        price = product.price
        try:
            with self._db.write() as db:
                db.execute(
                    f"INSERT INTO products ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        product.product_id,
                        product.name,
                        product.description,
                        price.currency_code,
                        price.units,
                        price.nanos,
                    ),
                )
                record(db, TOPIC, _created(product))
        except sqlite3.IntegrityError:
            raise AlreadyExists(PRODUCT, product.product_id) from None

    def version(self) -> int:
        """Changes whenever any instance commits a change to the catalogue."""
        return self._db.data_version()

    def get(self, product_id: str) -> Product | None:
        """The product with this id, or None."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM products WHERE product_id = ?", (product_id,)
        )
        return _product(rows[0]) if rows else None

    def get_many(self, product_ids: Sequence[str]) -> list[Product]:
        """The products with these ids that exist, each once, in no particular order."""
        unique = list(dict.fromkeys(product_ids))
        marks = ", ".join("?" * len(unique))
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM products WHERE product_id IN ({marks})", unique
        )
        return [_product(row) for row in rows]

    def page(self, *, after: str | None, limit: int) -> tuple[list[Product], str | None]:
        """Up to `limit` products in id order, after the id `after` if given, and the id
        to continue after if there are more (else None)."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM products WHERE product_id > ? ORDER BY product_id LIMIT ?",
            (after or "", limit + 1),
        )
        products = [_product(row) for row in rows[:limit]]
        more = len(rows) > limit and bool(products)
        return products, (products[-1].product_id if more else None)


def _created(product: Product) -> Event:
    message = events_pb2.ProductCreated(
        product_id=product.product_id,
        name=product.name,
        description=product.description,
        price=product.price.to_proto(),
    )
    return new_event(f"product-{product.product_id}", 1, message)


def _product(row: tuple[str, str, str, str, int, int]) -> Product:
    product_id, name, description, currency_code, units, nanos = row
    return Product(
        product_id=product_id,
        name=name,
        description=description,
        price=Money(currency_code=currency_code, units=units, nanos=nanos),
    )
