"""Stock and reservations in SQLite, `<data_dir>/inventory.db`.

The service's instances are separate processes sharing this file through a
`mesh.storage.Database`, and every change is one short `write()` transaction, which
takes the write lock before reading: that is what makes a reservation all-or-nothing
across processes. CHECK constraints restate the invariant (0 <= reserved <= on_hand).

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.

Stock is kept only for products the store knows (`known_products`, learnt from
product's events by `learn_product`): changing the stock of any other is NOT_FOUND.
Every change of a product's stock records a StockChanged event (topic TOPIC, stream
"stock-<product_id>", the stream's next version) in the change's own transaction, in
the file's outbox (services.common.outbox), for the service to relay to the bus.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from shop.inventory.v1 import events_pb2

from mesh.problems import NotFound
from mesh.storage import Database
from services.common.messaging import new_event
from services.common.outbox import OUTBOX_SCHEMA, next_version, record
from services.inventory import domain
from services.inventory.domain import Reservation, ReservationItem, ReservationState, StockLevel

__all__ = ["TOPIC", "InventoryStore"]

TOPIC = "inventory"
"""The topic inventory's events are published on."""

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS stock (
        product_id TEXT PRIMARY KEY,
        on_hand    INTEGER NOT NULL,
        reserved   INTEGER NOT NULL,
        CHECK (reserved >= 0 AND on_hand >= reserved)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS adjustments (
        id         INTEGER PRIMARY KEY,
        product_id TEXT NOT NULL,
        delta      INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        time_ns    INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reservations (
        order_id TEXT PRIMARY KEY,
        state    INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reservation_items (
        order_id   TEXT NOT NULL REFERENCES reservations (order_id),
        position   INTEGER NOT NULL,
        product_id TEXT NOT NULL,
        quantity   INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (order_id, position),
        UNIQUE (order_id, product_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS known_products (
        product_id TEXT PRIMARY KEY,
        learnt_ns  INTEGER NOT NULL
    )
    """,
    *OUTBOX_SCHEMA,
)


class InventoryStore:
    """Stock levels and reservations. Open with `InventoryStore(path)`; the schema is
    created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)

    @property
    def database(self) -> Database:
        """The SQLite file, whose outbox holds the events to publish."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def knows(self, product_id: str) -> bool:
        """Whether the store has learnt of the product."""
        rows = self._db.query("SELECT 1 FROM known_products WHERE product_id = ?", (product_id,))
        return bool(rows)

    def learn_product(self, product_id: str, opening_stock: int | None, reason: str) -> bool:
        """Know the product from now on and, if `opening_stock` is given and it was never
        stocked, give it those units. Idempotent: learning a product again (an event
        delivered twice) changes nothing. Returns whether the product was new.
        """
        with self._db.write() as db:
            inserted = db.execute(
                "INSERT INTO known_products (product_id, learnt_ns) VALUES (?, ?)"
                " ON CONFLICT (product_id) DO NOTHING",
                (product_id, time.time_ns()),
            ).rowcount
            if opening_stock is not None:
                _open(db, product_id, opening_stock, reason)
        return inserted == 1

    def stock(self, product_id: str) -> StockLevel:
        """The product's stock level; zeros if it was never stocked (or is unknown)."""
        rows = self._db.query(
            "SELECT on_hand, reserved FROM stock WHERE product_id = ?", (product_id,)
        )
        return StockLevel(product_id, *rows[0]) if rows else StockLevel(product_id)

    def adjust(self, product_id: str, delta: int, reason: str) -> StockLevel:
        """Add `delta` units on hand and record why.

        Raises:
            NotFound: the store has not learnt of the product.
            FailedPrecondition: on hand would drop below the units reserved.
        """
        with self._db.write() as db:
            _require_known(db, [product_id])
            level = _levels(db, [product_id]).get(product_id, StockLevel(product_id))
            after = domain.adjusted(level, delta)
            _save_levels(db, [after], cause="adjusted")
            _record_adjustment(db, product_id, delta, reason)
        return after

    def open_stock(self, product_id: str, on_hand: int, reason: str) -> bool:
        """Give a known product never stocked before `on_hand` units; returns whether it
        did. Safe when several instances start at once: only one of them stocks it."""
        with self._db.write() as db:
            return bool(_known(db, [product_id])) and _open(db, product_id, on_hand, reason)

    def reserve(self, order_id: str, items: Sequence[ReservationItem]) -> Reservation:
        """Hold every item for the order, or none. Repeating a reservation returns the one
        held (even if released since).

        Raises:
            NotFound: the store has not learnt of an item's product (the first such).
            FailedPrecondition: some products are short; each is listed.
            AlreadyExists: the order holds a reservation of other items.
        """
        with self._db.write() as db:
            existing = _reservation(db, order_id)
            if existing is not None:
                return domain.same_items(existing, items)
            product_ids = [item.product_id for item in items]
            _require_known(db, product_ids)
            levels = _levels(db, product_ids)
            _save_levels(db, domain.reserved(levels, items), cause="reserved")
            reservation = Reservation(order_id, tuple(items), ReservationState.ACTIVE)
            _insert_reservation(db, reservation)
        return reservation

    def release(self, order_id: str) -> Reservation:
        """Give the order's units back to available stock; a released reservation is
        returned unchanged.

        Raises:
            NotFound: the order holds no reservation.
        """
        with self._db.write() as db:
            reservation = _reservation(db, order_id)
            if reservation is None:
                raise NotFound(domain.RESERVATION, order_id)
            if reservation.state is ReservationState.RELEASED:
                return reservation
            levels = _levels(db, [item.product_id for item in reservation.items])
            _save_levels(db, domain.released(levels, reservation), cause="released")
            db.execute(
                "UPDATE reservations SET state = ? WHERE order_id = ?",
                (ReservationState.RELEASED.value, order_id),
            )
        return Reservation(order_id, reservation.items, ReservationState.RELEASED)

    def reservation(self, order_id: str) -> Reservation | None:
        """The reservation held for the order, or None."""
        with self._db.read() as db:
            return _reservation(db, order_id)


def _levels(db: sqlite3.Connection, product_ids: Iterable[str]) -> dict[str, StockLevel]:
    ids = list(product_ids)
    marks = ", ".join("?" * len(ids))
    rows = db.execute(
        f"SELECT product_id, on_hand, reserved FROM stock WHERE product_id IN ({marks})", ids
    )
    return {pid: StockLevel(pid, on_hand=on_hand, reserved=held) for pid, on_hand, held in rows}


def _record_adjustment(db: sqlite3.Connection, product_id: str, delta: int, reason: str) -> None:
    db.execute(
        "INSERT INTO adjustments (product_id, delta, reason, time_ns) VALUES (?, ?, ?, ?)",
        (product_id, delta, reason, time.time_ns()),
    )


def _known(db: sqlite3.Connection, product_ids: Sequence[str]) -> set[str]:
    """Those of `product_ids` the store has learnt of."""
    marks = ", ".join("?" * len(product_ids))
    rows = db.execute(
        f"SELECT product_id FROM known_products WHERE product_id IN ({marks})", product_ids
    )
    return {product_id for (product_id,) in rows}


def _require_known(db: sqlite3.Connection, product_ids: Sequence[str]) -> None:
    known = _known(db, product_ids)
    for product_id in product_ids:
        if product_id not in known:
            raise NotFound(domain.PRODUCT, product_id)


def _open(db: sqlite3.Connection, product_id: str, on_hand: int, reason: str) -> bool:
    """Stock a product never stocked with `on_hand` units; whether it did."""
    if product_id in _levels(db, [product_id]):
        return False
    _save_levels(db, [StockLevel(product_id, on_hand=on_hand)], cause="opened")
    _record_adjustment(db, product_id, on_hand, reason)
    return True


def _save_levels(db: sqlite3.Connection, levels: Iterable[StockLevel], *, cause: str) -> None:
    """Write the new levels, each with its StockChanged event in the outbox."""
    levels = list(levels)
    db.executemany(
        "INSERT INTO stock (product_id, on_hand, reserved) VALUES (?, ?, ?)"
        " ON CONFLICT (product_id) DO UPDATE"
        " SET on_hand = excluded.on_hand, reserved = excluded.reserved",
        [(level.product_id, level.on_hand, level.reserved) for level in levels],
    )
    for level in levels:
        stream = f"stock-{level.product_id}"
        changed = events_pb2.StockChanged(
            product_id=level.product_id,
            on_hand=level.on_hand,
            reserved=level.reserved,
            available=level.available,
            cause=cause,
        )
        record(db, TOPIC, new_event(stream, next_version(db, stream), changed))


def _reservation(db: sqlite3.Connection, order_id: str) -> Reservation | None:
    row = db.execute("SELECT state FROM reservations WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        return None
    items = db.execute(
        "SELECT product_id, quantity FROM reservation_items WHERE order_id = ? ORDER BY position",
        (order_id,),
    )
    return Reservation(
        order_id,
        tuple(ReservationItem(product_id, quantity) for product_id, quantity in items),
        ReservationState(row[0]),
    )


def _insert_reservation(db: sqlite3.Connection, reservation: Reservation) -> None:
    db.execute(
        "INSERT INTO reservations (order_id, state) VALUES (?, ?)",
        (reservation.order_id, reservation.state.value),
    )
    db.executemany(
        "INSERT INTO reservation_items (order_id, position, product_id, quantity)"
        " VALUES (?, ?, ?, ?)",
        [
            (reservation.order_id, position, item.product_id, item.quantity)
            for position, item in enumerate(reservation.items)
        ],
    )
