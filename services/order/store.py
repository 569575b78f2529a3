"""Orders in SQLite, `<data_dir>/order.db`.

Several instances share the file through a `mesh.storage.Database`, each write one
short write transaction.

Request keys: a caller's idempotency key (customer_id, request_id) is claimed with the
hold, in one transaction, before any stock is reserved: only one PlaceOrder can claim a
key, and a concurrent duplicate sees it claimed (with the fingerprint of the request
that claimed it) and waits for that order instead of reserving stock of its own. The
claim goes when its hold goes; a stored order then keeps the key (a unique index on
(customer_id, request_id)), and an attempt that ended without an order frees it.

Holds: before PlaceOrder asks inventory to reserve stock, it records a hold for the new
order id; storing the order removes it in the same transaction. A hold that outlives
its PlaceOrder (the release failed, the reservation timed out with an unknown outcome,
or the process died) is stock that may be held for no order, and the sweeper gives it
back (services.order.sweeper). An order is stored only while its hold is there and
unclaimed; claiming a hold for release and storing its order are write transactions,
so whichever commits first wins and the other sees it.

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mesh.storage import Database
from services.order.domain import Money, Order, OrderItem, OrderStatus, request_fingerprint

__all__ = ["HoldClaimed", "KeyUse", "OrderStore", "RequestKey"]

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
    """
    CREATE UNIQUE INDEX IF NOT EXISTS orders_by_request
        ON orders (customer_id, request_id) WHERE request_id <> ''
    """,
    "CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, seq)",
    """
    CREATE TABLE IF NOT EXISTS holds (
        order_id       TEXT PRIMARY KEY,
        create_time_ns INTEGER NOT NULL,
        claimed        INTEGER NOT NULL DEFAULT 0
    )
    """,
    # A request key claimed by the PlaceOrder holding `order_id`: gone with its hold.
    """
    CREATE TABLE IF NOT EXISTS request_claims (
        customer_id TEXT NOT NULL,
        request_id  TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        order_id    TEXT NOT NULL UNIQUE REFERENCES holds (order_id),
        PRIMARY KEY (customer_id, request_id)
    )
    """,
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
)

_ORDER_COLUMNS = (
    "seq, order_id, customer_id, request_id, status, currency_code, total_units, total_nanos,"
    " create_time_ns"
)


class HoldClaimed(Exception):
    """The order's hold was claimed for release before the order could be stored."""


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
    its order, or None while the PlaceOrder that claimed it is still running."""

    fingerprint: str
    order: Order | None


class OrderStore:
    """Orders by id, by request id and newest first. Open with `OrderStore(path)`; the
    schema is created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def hold(self, order_id: str, create_time_ns: int, key: RequestKey | None = None) -> bool:
        """Record that stock may soon be held for `order_id`, not stored yet, and claim
        `key` for it. Returns False, recording nothing, if `key` is taken: by a stored
        order or by a PlaceOrder still running (see `key_use`)."""
        with self._db.write() as db:
            if key is not None and _key_use(db, key.customer_id, key.request_id) is not None:
                return False
            db.execute(
                "INSERT INTO holds (order_id, create_time_ns) VALUES (?, ?)",
                (order_id, create_time_ns),
            )
            if key is not None:
                db.execute(
                    "INSERT INTO request_claims (customer_id, request_id, fingerprint, order_id)"
                    " VALUES (?, ?, ?, ?)",
                    (key.customer_id, key.request_id, key.fingerprint, order_id),
                )
        return True

    def drop_hold(self, order_id: str) -> None:
        """Forget the hold of `order_id` and free its request key: its order holds no
        stock and will not be stored."""
        with self._db.write() as db:
            _drop_hold(db, order_id)

    def claim_holds(self, created_before_ns: int) -> list[str]:
        """Claim, for release, every hold made before `created_before_ns` (claimed
        ones included: a sweeper may have died); their orders can no longer be stored."""
        with self._db.write() as db:
            rows = db.execute(
                "UPDATE holds SET claimed = 1 WHERE create_time_ns < ? RETURNING order_id",
                (created_before_ns,),
            ).fetchall()
        return sorted(order_id for (order_id,) in rows)

    def add(self, order: Order) -> None:
        """Store a new order, which must have an unclaimed hold, and drop the hold (its
        request key, if any, passes to the order).

        Raises:
            HoldClaimed: the order has no unclaimed hold (the sweeper claimed it, and
                may have released its stock and dropped it since).
        """
        with self._db.write() as db:
            unclaimed = db.execute(
                "SELECT 1 FROM holds WHERE order_id = ? AND claimed = 0", (order.order_id,)
            ).fetchone()
            if unclaimed is None:
                raise HoldClaimed(order.order_id)
            _drop_hold(db, order.order_id)
            total = order.total
            db.execute(
                "INSERT INTO orders (order_id, customer_id, request_id, status, currency_code,"
                " total_units, total_nanos, create_time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order.order_id,
                    order.customer_id,
                    order.request_id,
                    order.status.value,
                    total.currency_code,
                    total.units,
                    total.nanos,
                    order.create_time_ns,
                ),
            )
            db.executemany(
                "INSERT INTO order_items (order_id, position, product_id, quantity,"
                " currency_code, units, nanos) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        order.order_id,
                        position,
                        item.product_id,
                        item.quantity,
                        item.unit_price.currency_code,
                        item.unit_price.units,
                        item.unit_price.nanos,
                    )
                    for position, item in enumerate(order.items)
                ],
            )

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


_Row = tuple[int, str, str, str, int, str, int, int, int]


def _drop_hold(db: sqlite3.Connection, order_id: str) -> None:
    db.execute("DELETE FROM request_claims WHERE order_id = ?", (order_id,))
    db.execute("DELETE FROM holds WHERE order_id = ?", (order_id,))


def _key_use(db: sqlite3.Connection, customer_id: str, request_id: str) -> KeyUse | None:
    order = _find(db, "customer_id = ? AND request_id = ?", (customer_id, request_id))
    if order is not None:
        return KeyUse(request_fingerprint(order.items), order)
    row = db.execute(
        "SELECT fingerprint FROM request_claims WHERE customer_id = ? AND request_id = ?",
        (customer_id, request_id),
    ).fetchone()
    return None if row is None else KeyUse(row[0], None)


def _find(db: sqlite3.Connection, where: str, args: Sequence[object]) -> Order | None:
    row = db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {where}", args).fetchone()
    return None if row is None else _order(db, row)


def _order(db: sqlite3.Connection, row: _Row) -> Order:
    _, order_id, customer_id, request_id, status, currency, units, nanos, created = row
    items = db.execute(
        "SELECT product_id, quantity, currency_code, units, nanos FROM order_items"
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
    )
