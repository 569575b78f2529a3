"""Shipments and refused shipments in SQLite, `<data_dir>/shipping.db`.

Several instances share the file through a `mesh.storage.Database`. A CreateShipment is
one write transaction that looks its idempotency key up and, if the key is new, records
the outcome under it; `write()` takes the write lock before reading, so two calls with
one key, at one instance or at two, run one after the other, and the second finds the
first's shipment. A key is kept by its shipment (`shipments.idempotency_key`) or, when
the shipment was refused, in `refusals`; the transaction looks in both.

Statuses are not stored: a shipment stores its creation time, its step and, once
cancelled, its cancellation time, and services.shipping.domain computes its status
from those (so a read is never a write).

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesh.problems import NotFound
from mesh.storage import Database
from services.shipping import domain
from services.shipping.domain import Address, Refusal, Shipment, ShipmentItem, ShipmentRequest

__all__ = ["ShippingStore"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS shipments (
        shipment_id     TEXT PRIMARY KEY,
        order_id        TEXT NOT NULL,
        name            TEXT NOT NULL,
        street          TEXT NOT NULL,
        city            TEXT NOT NULL,
        postal_code     TEXT NOT NULL,
        country         TEXT NOT NULL,
        create_time_ns  INTEGER NOT NULL,
        step_ns         INTEGER NOT NULL CHECK (step_ns > 0),
        cancel_time_ns  INTEGER,
        idempotency_key TEXT NOT NULL UNIQUE
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS shipment_items (
        shipment_id TEXT NOT NULL REFERENCES shipments (shipment_id),
        position    INTEGER NOT NULL,
        product_id  TEXT NOT NULL,
        quantity    INTEGER NOT NULL CHECK (quantity > 0),
        PRIMARY KEY (shipment_id, position)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS refusals (
        idempotency_key TEXT PRIMARY KEY,
        fingerprint     TEXT NOT NULL,
        subject         TEXT NOT NULL,
        reason          TEXT NOT NULL,
        time_ns         INTEGER NOT NULL
    )
    """,
)

_COLUMNS = (
    "shipment_id, order_id, name, street, city, postal_code, country, create_time_ns,"
    " step_ns, cancel_time_ns, idempotency_key"
)


class ShippingStore:
    """Shipments by id and by key. Open with `ShippingStore(path)`; the schema is
    created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def create(
        self,
        request: ShipmentRequest,
        *,
        shipment_id: str,
        now_ns: int,
        step_ns: int,
        refusal: tuple[str, str] | None = None,
    ) -> Shipment:
        """The shipment of `request`'s key: the one created with it before, else a new
        one (`shipment_id`, created at `now_ns`, a status every `step_ns`); with a
        `refusal` (subject, reason), a new key is refused instead, and kept refused.

        Raises:
            InvalidArgument: on `idempotency_key`: it was used for another shipment.
            FailedPrecondition: the key's shipment was refused (now or before).
        """
        with self._db.write() as db:
            earlier = _by_key(db, request.idempotency_key)
            if earlier is None:
                earlier = _new(db, request, shipment_id, now_ns, step_ns, refusal)
        # After the commit: a refusal is kept even though it is answered with an error.
        return domain.creation_outcome(earlier, request)

    def cancel(self, shipment_id: str, now_ns: int) -> Shipment:
        """Cancel the shipment at `now_ns`; a cancelled one is returned unchanged.

        Raises:
            NotFound: there is no such shipment.
            FailedPrecondition: it has left already.
        """
        with self._db.write() as db:
            shipment = _find(db, "shipment_id = ?", (shipment_id,))
            if shipment is None:
                raise NotFound(domain.SHIPMENT, shipment_id)
            after = domain.cancelled(shipment, now_ns)
            if after != shipment:
                db.execute(
                    "UPDATE shipments SET cancel_time_ns = ? WHERE shipment_id = ?",
                    (after.cancel_time_ns, shipment_id),
                )
        return after

    def get(self, shipment_id: str) -> Shipment | None:
        """The shipment with this id, or None."""
        with self._db.read() as db:
            return _find(db, "shipment_id = ?", (shipment_id,))


def _new(
    db: sqlite3.Connection,
    request: ShipmentRequest,
    shipment_id: str,
    now_ns: int,
    step_ns: int,
    refusal: tuple[str, str] | None,
) -> Shipment | Refusal:
    if refusal is not None:
        subject, reason = refusal
        refused = Refusal(request.idempotency_key, request.fingerprint, subject, reason, now_ns)
        db.execute(
            "INSERT INTO refusals (idempotency_key, fingerprint, subject, reason, time_ns)"
            " VALUES (?, ?, ?, ?, ?)",
            (refused.idempotency_key, refused.fingerprint, subject, reason, now_ns),
        )
        return refused
    shipment = Shipment(
        shipment_id=shipment_id,
        order_id=request.order_id,
        address=request.address,
        items=request.items,
        create_time_ns=now_ns,
        step_ns=step_ns,
        idempotency_key=request.idempotency_key,
    )
    address = shipment.address
    db.execute(
        f"INSERT INTO shipments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            shipment.shipment_id,
            shipment.order_id,
            address.name,
            address.street,
            address.city,
            address.postal_code,
            address.country,
            shipment.create_time_ns,
            shipment.step_ns,
            None,
            shipment.idempotency_key,
        ),
    )
    db.executemany(
        "INSERT INTO shipment_items (shipment_id, position, product_id, quantity)"
        " VALUES (?, ?, ?, ?)",
        [
            (shipment.shipment_id, position, item.product_id, item.quantity)
            for position, item in enumerate(shipment.items)
        ],
    )
    return shipment


def _by_key(db: sqlite3.Connection, key: str) -> Shipment | Refusal | None:
    shipment = _find(db, "idempotency_key = ?", (key,))
    if shipment is not None:
        return shipment
    row = db.execute(
        "SELECT fingerprint, subject, reason, time_ns FROM refusals WHERE idempotency_key = ?",
        (key,),
    ).fetchone()
    return None if row is None else Refusal(key, *row)


def _find(db: sqlite3.Connection, where: str, args: Sequence[object]) -> Shipment | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM shipments WHERE {where}", args).fetchone()
    return None if row is None else _shipment(db, row)


def _shipment(db: sqlite3.Connection, row: tuple[Any, ...]) -> Shipment:
    shipment_id, order_id, name, street, city, postal_code, country = row[:7]
    created, step, cancelled, key = row[7:]
    items = db.execute(
        "SELECT product_id, quantity FROM shipment_items WHERE shipment_id = ? ORDER BY position",
        (shipment_id,),
    )
    return Shipment(
        shipment_id=shipment_id,
        order_id=order_id,
        address=Address(name, street, city, postal_code, country),
        items=tuple(ShipmentItem(product_id, quantity) for product_id, quantity in items),
        create_time_ns=created,
        step_ns=step,
        idempotency_key=key,
        cancel_time_ns=cancelled,
    )
