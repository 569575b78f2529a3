"""Payments and declined charges in SQLite, `<data_dir>/payment.db`.

Several instances share the file through a `mesh.storage.Database`. A Charge or a
Refund is one write transaction that looks its idempotency key up and, if the key is
new, records the outcome under it. `write()` takes the write lock before reading, so
two calls with one key, at one instance or at two, run one after the other: the first
records, the second finds the key. That is what makes a key hold under concurrent
retries; the unique columns on the keys restate it.

A Charge key is kept either by its payment (`payments.charge_key`) or, when the charge
was declined, in `declines`; the transaction looks in both. A Refund key is kept by the
payment it refunded (`payments.refund_key`).

The transaction that settles a new key also records its event in the outbox
(services.payment.events): PaymentCaptured, PaymentDeclined or PaymentRefunded. A retry
finds the key settled and records nothing.

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from mesh.problems import NotFound
from mesh.storage import Database
from services.common.money import Money
from services.common.outbox import OUTBOX_SCHEMA
from services.payment import domain, events
from services.payment.domain import ChargeRequest, Decline, Payment, PaymentStatus

__all__ = ["PaymentStore"]

_SCHEMA = (
    # `seq` orders the payments: a later insert gets a larger one (newest first: DESC).
    """
    CREATE TABLE IF NOT EXISTS payments (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        payment_id     TEXT NOT NULL UNIQUE,
        order_id       TEXT NOT NULL,
        customer_id    TEXT NOT NULL,
        currency_code  TEXT NOT NULL,
        units          INTEGER NOT NULL,
        nanos          INTEGER NOT NULL,
        status         INTEGER NOT NULL,
        create_time_ns INTEGER NOT NULL,
        charge_key     TEXT NOT NULL UNIQUE,
        refund_key     TEXT UNIQUE,
        refund_time_ns INTEGER,
        CHECK ((status = 2) = (refund_key IS NOT NULL AND refund_time_ns IS NOT NULL))
    )
    """,
    "CREATE INDEX IF NOT EXISTS payments_by_order ON payments (order_id, seq)",
    """
    CREATE TABLE IF NOT EXISTS declines (
        charge_key    TEXT PRIMARY KEY,
        order_id      TEXT NOT NULL,
        customer_id   TEXT NOT NULL,
        currency_code TEXT NOT NULL,
        units         INTEGER NOT NULL,
        nanos         INTEGER NOT NULL,
        reason        TEXT NOT NULL,
        time_ns       INTEGER NOT NULL
    )
    """,
    *OUTBOX_SCHEMA,
)

_COLUMNS = (
    "seq, payment_id, order_id, customer_id, currency_code, units, nanos, status,"
    " create_time_ns, charge_key, refund_key, refund_time_ns"
)


class PaymentStore:
    """Payments by id, by key and by order. Open with `PaymentStore(path)`; the schema
    is created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)
        self._recorded: Callable[[], object] = lambda: None

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

    def charge(
        self,
        request: ChargeRequest,
        *,
        payment_id: str,
        now_ns: int,
        decline_reason: str | None = None,
    ) -> Payment:
        """The payment of `request`'s key: the one made with it before, else a new one
        (`payment_id`, charged at `now_ns`); with a `decline_reason`, a new key is
        declined instead, and kept declined.

        Raises:
            InvalidArgument: on `idempotency_key`: it was used for another charge.
            FailedPrecondition: the key's charge was declined (now or before).
        """
        with self._db.write() as db:
            earlier = _charge_by_key(db, request.idempotency_key)
            new_key = earlier is None
            if earlier is None:
                earlier = _new_charge(db, request, payment_id, now_ns, decline_reason)
        if new_key:
            self._recorded()
        # After the commit: a decline is kept even though it is answered with an error.
        return domain.charge_outcome(earlier, request)

    def refund(self, payment_id: str, idempotency_key: str, now_ns: int) -> Payment:
        """Refund the payment, or return the one refunded with `idempotency_key`.

        Raises:
            InvalidArgument: on `idempotency_key`: it refunded another payment.
            NotFound: there is no such payment.
            FailedPrecondition: it was refunded already, with another key.
        """
        with self._db.write() as db:
            earlier = _find(db, "refund_key = ?", (idempotency_key,))
            if earlier is not None:
                return domain.refund_again(earlier, payment_id)
            payment = _find(db, "payment_id = ?", (payment_id,))
            if payment is None:
                raise NotFound(domain.PAYMENT, payment_id)
            after = domain.refunded(payment, idempotency_key, now_ns)
            db.execute(
                "UPDATE payments SET status = ?, refund_key = ?, refund_time_ns = ?"
                " WHERE payment_id = ?",
                (after.status.value, after.refund_key, after.refund_time_ns, payment_id),
            )
            events.record_refunded(db, after)
        self._recorded()
        return after

    def get(self, payment_id: str) -> Payment | None:
        """The payment with this id, or None."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM payments WHERE payment_id = ?", (payment_id,)
        )
        return _payment(rows[0]) if rows else None

    def page(
        self, *, order_id: str, customer_id: str, before: int | None, limit: int
    ) -> tuple[list[Payment], int | None]:
        """Up to `limit` payments of `order_id`, newest first, only `customer_id`'s if
        not empty, older than cursor `before` if given; and the cursor to continue from
        if there are more."""
        where = ["order_id = ?", "seq < ?"]
        args: list[object] = [order_id, 2**63 - 1 if before is None else before]
        if customer_id:
            where.append("customer_id = ?")
            args.append(customer_id)
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM payments WHERE {' AND '.join(where)}"
            " ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        )
        payments = [_payment(row) for row in rows[:limit]]
        more = len(rows) > limit and bool(payments)
        return payments, (rows[limit - 1][0] if more else None)


def _new_charge(
    db: sqlite3.Connection,
    request: ChargeRequest,
    payment_id: str,
    now_ns: int,
    decline_reason: str | None,
) -> Payment | Decline:
    amount = request.amount
    if decline_reason is not None:
        db.execute(
            "INSERT INTO declines (charge_key, order_id, customer_id, currency_code, units,"
            " nanos, reason, time_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request.idempotency_key,
                request.order_id,
                request.customer_id,
                amount.currency_code,
                amount.units,
                amount.nanos,
                decline_reason,
                now_ns,
            ),
        )
        decline = Decline(request, decline_reason, now_ns)
        events.record_declined(db, decline)
        return decline
    payment = Payment(
        payment_id=payment_id,
        order_id=request.order_id,
        customer_id=request.customer_id,
        amount=amount,
        status=PaymentStatus.CHARGED,
        create_time_ns=now_ns,
        charge_key=request.idempotency_key,
    )
    db.execute(
        "INSERT INTO payments (payment_id, order_id, customer_id, currency_code, units, nanos,"
        " status, create_time_ns, charge_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            payment.payment_id,
            payment.order_id,
            payment.customer_id,
            amount.currency_code,
            amount.units,
            amount.nanos,
            payment.status.value,
            payment.create_time_ns,
            payment.charge_key,
        ),
    )
    events.record_captured(db, payment)
    return payment


def _charge_by_key(db: sqlite3.Connection, key: str) -> Payment | Decline | None:
    payment = _find(db, "charge_key = ?", (key,))
    if payment is not None:
        return payment
    row = db.execute(
        "SELECT order_id, customer_id, currency_code, units, nanos, reason, time_ns"
        " FROM declines WHERE charge_key = ?",
        (key,),
    ).fetchone()
    if row is None:
        return None
    order_id, customer_id, currency, units, nanos, reason, time_ns = row
    request = ChargeRequest(order_id, customer_id, Money(currency, units, nanos), key)
    return Decline(request, reason, time_ns)


def _find(db: sqlite3.Connection, where: str, args: Sequence[object]) -> Payment | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM payments WHERE {where}", args).fetchone()
    return None if row is None else _payment(row)


_Row = tuple[int, str, str, str, str, int, int, int, int, str, str | None, int | None]


def _payment(row: _Row) -> Payment:
    _, payment_id, order_id, customer_id, currency, units, nanos, status, created = row[:9]
    charge_key, refund_key, refunded = row[9:]
    return Payment(
        payment_id=payment_id,
        order_id=order_id,
        customer_id=customer_id,
        amount=Money(currency, units, nanos),
        status=PaymentStatus(status),
        create_time_ns=created,
        charge_key=charge_key,
        refund_key=refund_key or "",
        refund_time_ns=refunded,
    )
