"""Orders and their sagas in SQLite, `<data_dir>/order.db`.

Several instances share the file through a `mesh.storage.Database`, each write one
short write transaction.

An order is written PENDING, with its priced items and its saga's steps, before the
saga's first step; each step's outcome (and the order's, at the end) is then written as
it happens, one transaction per transition (`advance`). A PENDING order therefore says
that stock, a payment or a shipment may exist for it, and what is known of each.

Events (services.order.events): the transaction that writes an order PENDING records
its OrderPlaced in the outbox (services.common.outbox), and the one that makes it
CONFIRMED or CANCELLED records OrderConfirmed or OrderCancelled; a relay publishes
them. A saga resumed after a crash cannot end twice, so neither can its event.

Leases: whoever drives a saga (the PlaceOrder that began it, or an instance's resumer)
holds its lease, `lease_owner` until `lease_until_ns`. Every transition is written only
while the writer still owns the lease, and renews it; a PENDING order whose lease has
expired is abandoned (its driver died, or gave up on a step for a while) and may be
claimed by a resumer (`claim_expired`), in one transaction, so only one driver at a time
moves a saga on.

Request keys: a caller's idempotency key (customer_id, request_id) belongs to the order
placed with it, PENDING or CONFIRMED (a unique partial index); a CANCELLED order frees
it, so a retry after a failure may try again. A concurrent duplicate finds the key taken
(with the items it was taken for) and waits for that order.

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.storage import Database
from services.common.outbox import OUTBOX_SCHEMA
from services.order import events
from services.order.domain import (
    FINAL_STATUSES,
    Address,
    Money,
    Order,
    OrderItem,
    OrderStatus,
    SagaStep,
    StepStatus,
    request_fingerprint,
)

__all__ = ["KeyUse", "LeaseLost", "OrderStore", "RequestKey"]

_PENDING = OrderStatus.PENDING.value
_CANCELLED = OrderStatus.CANCELLED.value

_SCHEMA = (
    # `seq` orders the orders: a later insert gets a larger one, so newest first is seq DESC.
    """
    CREATE TABLE IF NOT EXISTS orders (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id       TEXT NOT NULL UNIQUE,
        customer_id    TEXT NOT NULL,
        request_id     TEXT NOT NULL,
        status         INTEGER NOT NULL,
        currency_code  TEXT NOT NULL,
        total_units    INTEGER NOT NULL,
        total_nanos    INTEGER NOT NULL,
        create_time_ns INTEGER NOT NULL
    )
    """,
    # Before the saga, a key stayed with its order whatever happened; now a CANCELLED
    # order frees it.
    "DROP INDEX IF EXISTS orders_by_request",
    "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, seq)",
    """
    CREATE TABLE IF NOT EXISTS order_items (
        order_id      TEXT NOT NULL REFERENCES orders (order_id),
        position      INTEGER NOT NULL,
        product_id    TEXT NOT NULL,
        quantity      INTEGER NOT NULL,
        currency_code TEXT NOT NULL,
        units         INTEGER NOT NULL,
        nanos         INTEGER NOT NULL,
        PRIMARY KEY (order_id, position)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS saga_steps (
        order_id       TEXT NOT NULL REFERENCES orders (order_id),
        position       INTEGER NOT NULL,
        name           TEXT NOT NULL,
        status         INTEGER NOT NULL,
        detail         TEXT NOT NULL,
        attempts       INTEGER NOT NULL,
        undo_attempts  INTEGER NOT NULL,
        update_time_ns INTEGER NOT NULL,
        PRIMARY KEY (order_id, position)
    )
    """,
    *OUTBOX_SCHEMA,
)

# Columns the saga added to `orders`, added to a database made before it (with these
# defaults: an old order has no address, no saga and no lease).
_ADDED_COLUMNS = (
    ("address_name", "TEXT NOT NULL DEFAULT ''"),
    ("address_street", "TEXT NOT NULL DEFAULT ''"),
    ("address_city", "TEXT NOT NULL DEFAULT ''"),
    ("address_postal_code", "TEXT NOT NULL DEFAULT ''"),
    ("address_country", "TEXT NOT NULL DEFAULT ''"),
    ("payment_id", "TEXT NOT NULL DEFAULT ''"),
    ("shipment_id", "TEXT NOT NULL DEFAULT ''"),
    ("failure_reason", "TEXT NOT NULL DEFAULT ''"),
    ("lease_owner", "TEXT NOT NULL DEFAULT ''"),
    ("lease_until_ns", "INTEGER NOT NULL DEFAULT 0"),
)
_INDEXES = (
    f"""
    CREATE UNIQUE INDEX IF NOT EXISTS orders_by_live_request
        ON orders (customer_id, request_id) WHERE request_id <> '' AND status <> {_CANCELLED}
    """,
    f"""
    CREATE INDEX IF NOT EXISTS orders_pending
        ON orders (lease_until_ns) WHERE status = {_PENDING}
    """,
)

_ORDER_COLUMNS = (
    "seq, order_id, customer_id, request_id, status, currency_code, total_units, total_nanos,"
    " create_time_ns, address_name, address_street, address_city, address_postal_code,"
    " address_country, payment_id, shipment_id, failure_reason"
)
_UPDATABLE = frozenset({"status", "payment_id", "shipment_id", "failure_reason"})


class LeaseLost(Exception):
    """The saga's lease is no longer the writer's: another driver claimed it."""


@dataclass(frozen=True)
class RequestKey:
    """A caller's idempotency key, scoped to its customer, and the fingerprint of the
    request it was first used for (services.order.domain.request_fingerprint)."""

    customer_id: str
    request_id: str
    fingerprint: str


@dataclass(frozen=True)
class KeyUse:
    """What a request key stands for: the request it was used for (`fingerprint`), and
    the order placed with it (PENDING while its saga runs)."""

    fingerprint: str
    order: Order


class OrderStore:
    """Orders by id, by request id and newest first, with their sagas. Open with
    `OrderStore(path)`; the schema is created (or brought up to date) if needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)
        self._recorded: Callable[[], object] = lambda: None
        with self._db.write() as db:
            present = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
            for column, kind in _ADDED_COLUMNS:
                if column not in present:
                    db.execute(f"ALTER TABLE orders ADD COLUMN {column} {kind}")
            for statement in _INDEXES:
                db.execute(statement)

    @property
    def database(self) -> Database:
        """The database, for the outbox relay (services.common.messaging.relay_outbox)."""
        return self._db

    def on_events(self, callback: Callable[[], object]) -> None:
        """Have `callback` called after each commit that recorded events in the outbox,
        on the thread that wrote (wake the relay with it)."""
        self._recorded = callback

    def close(self) -> None:
        self._db.close()

    def begin(self, order: Order, *, owner: str, lease_until_ns: int) -> bool:
        """Record a new PENDING order with its items and saga steps, its lease held by
        `owner`. Returns False, recording nothing, if its request key is taken by an
        order that is not CANCELLED (see `key_use`). OrderPlaced is recorded with it."""
        with self._db.write() as db:
            if order.request_id and _key_use(db, order.customer_id, order.request_id):
                return False
            total, address = order.total, order.address
            names = ("", "", "", "", "") if address is None else (
                address.name, address.street, address.city, address.postal_code,
                address.country,
            )  # fmt: skip
            db.execute(
                "INSERT INTO orders (order_id, customer_id, request_id, status, currency_code,"
                " total_units, total_nanos, create_time_ns, address_name, address_street,"
                " address_city, address_postal_code, address_country, lease_owner,"
                " lease_until_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order.order_id, order.customer_id, order.request_id, order.status.value,
                    total.currency_code, total.units, total.nanos, order.create_time_ns,
                    *names, owner, lease_until_ns,
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO order_items (order_id, position, product_id, quantity,"
                " currency_code, units, nanos) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        order.order_id, position, item.product_id, item.quantity,
                        item.unit_price.currency_code, item.unit_price.units,
                        item.unit_price.nanos,
                    )
                    for position, item in enumerate(order.items)
                ],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO saga_steps (order_id, position, name, status, detail, attempts,"
                " undo_attempts, update_time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        order.order_id, position, step.name, step.status.value, step.detail,
                        step.attempts, step.undo_attempts, step.update_time_ns,
                    )
                    for position, step in enumerate(order.saga)
                ],
            )  # fmt: skip
            events.record_placed(db, order)
        self._recorded()
        return True

    def advance(
        self,
        order_id: str,
        *,
        owner: str,
        lease_until_ns: int,
        step: SagaStep | None = None,
        **changes: Any,
    ) -> Order:
        """One transition of a saga, while `owner` holds its lease: write `step` (by
        its name) and the order's `changes` (status, payment_id, shipment_id,
        failure_reason), and hold the lease until `lease_until_ns`. Returns the order
        as written. The transition that makes the order CONFIRMED or CANCELLED also
        records its OrderConfirmed or OrderCancelled: once, since nothing is written to
        an order that is no longer PENDING.

        Raises:
            LeaseLost: `owner` does not hold the lease (another driver claimed it), or
                the saga is over; nothing is written.
        """
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not an order column to change: {sorted(unknown)}")
        values = {
            key: value.value if isinstance(value, OrderStatus) else value
            for key, value in changes.items()
        }
        assignments = "".join(f", {key} = ?" for key in values)
        with self._db.write() as db:
            moved = db.execute(
                f"UPDATE orders SET lease_until_ns = ?{assignments}"
                " WHERE order_id = ? AND lease_owner = ? AND status = ?",
                (lease_until_ns, *values.values(), order_id, owner, _PENDING),
            )
            if moved.rowcount != 1:
                raise LeaseLost(order_id)
            if step is not None:
                db.execute(
                    "UPDATE saga_steps SET status = ?, detail = ?, attempts = ?,"
                    " undo_attempts = ?, update_time_ns = ? WHERE order_id = ? AND name = ?",
                    (
                        step.status.value, step.detail, step.attempts, step.undo_attempts,
                        step.update_time_ns, order_id, step.name,
                    ),
                )  # fmt: skip
            order = _find(db, "order_id = ?", (order_id,))
            assert order is not None
            ended = order.status in FINAL_STATUSES
            if ended:
                events.record_final(db, order)
        if ended:
            self._recorded()
        return order

    def claim_expired(
        self, now_ns: int, *, owner: str, lease_until_ns: int, limit: int
    ) -> list[str]:
        """Claim, for `owner`, up to `limit` PENDING sagas whose lease expired before
        `now_ns`, oldest lease first; returns their order ids."""
        with self._db.write() as db:
            rows = db.execute(
                "UPDATE orders SET lease_owner = ?, lease_until_ns = ? WHERE order_id IN"
                " (SELECT order_id FROM orders WHERE status = ? AND lease_until_ns < ?"
                "  ORDER BY lease_until_ns LIMIT ?) RETURNING order_id",
                (owner, lease_until_ns, _PENDING, now_ns, limit),
            ).fetchall()
        return sorted(order_id for (order_id,) in rows)

    def lease(self, order_id: str) -> tuple[str, int] | None:
        """Who holds the lease of a PENDING saga, and until when; None if it is over."""
        rows = self._db.query(
            "SELECT lease_owner, lease_until_ns FROM orders WHERE order_id = ? AND status = ?",
            (order_id, _PENDING),
        )
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def get(self, order_id: str) -> Order | None:
        """The order with this id, or None."""
        with self._db.read() as db:
            return _find(db, "order_id = ?", (order_id,))

    def key_use(self, customer_id: str, request_id: str) -> KeyUse | None:
        """What the customer's request key stands for, or None if it is free (always
        None for an empty request_id: orders placed without one are never repeats)."""
        if not request_id:
            return None
        with self._db.read() as db:
            return _key_use(db, customer_id, request_id)

    def page(
        self, *, customer_id: str, before: int | None, limit: int
    ) -> tuple[list[Order], int | None]:
        """Up to `limit` orders, newest first, of `customer_id` if not empty, older than
        cursor `before` if given; and the cursor to continue from if there are more."""
        where: list[str] = ["seq < ?"]
        args: list[object] = [2**63 - 1 if before is None else before]
        if customer_id:
            where.append("customer_id = ?")
            args.append(customer_id)
        with self._db.read() as db:
            rows = db.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {' AND '.join(where)}"
                " ORDER BY seq DESC LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
            orders = [_order(db, row) for row in rows[:limit]]
        more = len(rows) > limit and bool(orders)
        return orders, (rows[limit - 1][0] if more else None)


def _key_use(db: sqlite3.Connection, customer_id: str, request_id: str) -> KeyUse | None:
    order = _find(
        db,
        f"customer_id = ? AND request_id = ? AND status <> {_CANCELLED}",
        (customer_id, request_id),
    )
    return None if order is None else KeyUse(request_fingerprint(order.items), order)


def _find(db: sqlite3.Connection, where: str, args: Sequence[object]) -> Order | None:
    row = db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {where}", args).fetchone()
    return None if row is None else _order(db, row)


def _order(db: sqlite3.Connection, row: Sequence[Any]) -> Order:
    (_, order_id, customer_id, request_id, status, currency, units, nanos, created,
     name, street, city, postal_code, country, payment_id, shipment_id, reason) = row  # fmt: skip
    items = db.execute(
        "SELECT product_id, quantity, currency_code, units, nanos FROM order_items"
        " WHERE order_id = ? ORDER BY position",
        (order_id,),
    )
    steps = db.execute(
        "SELECT name, status, detail, attempts, undo_attempts, update_time_ns FROM saga_steps"
        " WHERE order_id = ? ORDER BY position",
        (order_id,),
    )
    return Order(
        order_id=order_id,
        customer_id=customer_id,
        items=tuple(
            OrderItem(product_id, quantity, Money(item_currency, item_units, item_nanos))
            for product_id, quantity, item_currency, item_units, item_nanos in items
        ),
        total=Money(currency, units, nanos),
        status=OrderStatus(status),
        create_time_ns=created,
        request_id=request_id,
        address=Address(name, street, city, postal_code, country) if name else None,
        saga=tuple(
            SagaStep(step, StepStatus(state), detail, attempts, undo, changed)
            for step, state, detail, attempts, undo, changed in steps
        ),
        payment_id=payment_id,
        shipment_id=shipment_id,
        failure_reason=reason,
    )
