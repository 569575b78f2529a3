"""The counts in SQLite, `<data_dir>/analytics.db`, shared by every instance.

An event is counted in one write transaction with the record of its id in the inbox
(services.common.outbox.Inbox): a redelivered event, at this instance or another,
finds its id and changes nothing. So the counts are exactly once per event, and since
they live in the database, not in a process, an instance that restarts, or another
replica, reads the same totals.

`counters` holds one row per counter and label value. The order value histogram is
`order_values`: one row per bucket (its upper bound as text, "+Inf" above the last),
with the orders that fell in it (not cumulative) and the sum of their totals in
dollars. A bucket row whose bound a later version no longer has still counts towards
every larger bound, so changing the bounds misplaces old orders only between
neighbouring buckets.

Reads are quick and never wait for a writer; counting may wait for another instance's
write lock: call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

from mesh.events import Event
from mesh.storage import Database
from services.analytics.domain import (
    CART_ABANDONMENT,
    CONSUMER,
    ORDER_VALUE_BUCKETS,
    ORDERS_NOT_IN_DOLLARS,
    PAYMENT_SUCCESS,
    USER_REGISTRATIONS,
    Change,
    Count,
    OrderValue,
    OrderValues,
    Totals,
    bucket_of,
    tally,
)
from services.common.outbox import OUTBOX_SCHEMA, Inbox

__all__ = ["AnalyticsStore"]

log = logging.getLogger("services.analytics")

_SCHEMA = (
    *OUTBOX_SCHEMA,  # its inbox table; analytics publishes nothing
    """
    CREATE TABLE IF NOT EXISTS counters (
        metric TEXT NOT NULL,
        label  TEXT NOT NULL,
        value  INTEGER NOT NULL,
        PRIMARY KEY (metric, label)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS order_values (
        bucket  TEXT PRIMARY KEY,
        count   INTEGER NOT NULL,
        dollars REAL NOT NULL
    )
    """,
)

_INFINITY = "+Inf"


class AnalyticsStore:
    """Counts by event, exactly once each. Open with `AnalyticsStore(path)`; the schema
    is created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)
        self._inbox = Inbox(self._db, CONSUMER)

    def close(self) -> None:
        self._db.close()

    def count(self, event: Event) -> bool:
        """Add what `event` counts for, unless it was counted before; True if it was
        counted now. An event whose payload does not parse counts for nothing (and is
        logged): delivering it again would not make it parse."""
        try:
            changes = tally(event)
        except ValueError as error:
            log.warning(
                "an event counts for nothing: %s",
                error,
                extra={"event_id": event.id, "stream": event.stream},
            )
            changes = []
        return self._inbox.handle(event, lambda db, _: _apply(db, changes))

    def totals(self) -> Totals:
        """Every count, from one consistent read."""
        with self._db.read() as db:
            counters: dict[tuple[str, str], int] = {
                (metric, label): int(value)
                for metric, label, value in db.execute("SELECT metric, label, value FROM counters")
            }
            buckets = db.execute("SELECT bucket, count, dollars FROM order_values").fetchall()
            (counted,) = db.execute(
                "SELECT COUNT(*) FROM inbox WHERE consumer = ?", (CONSUMER,)
            ).fetchone()
        return Totals(
            user_registrations=counters.get((USER_REGISTRATIONS, ""), 0),
            payment_successes=counters.get((PAYMENT_SUCCESS, ""), 0),
            cart_abandonments=_labelled(counters, CART_ABANDONMENT),
            order_values=_histogram(buckets),
            orders_not_in_dollars=_labelled(counters, ORDERS_NOT_IN_DOLLARS),
            events_counted=int(counted),
        )


def _apply(db: sqlite3.Connection, changes: list[Change]) -> None:
    for change in changes:
        if isinstance(change, Count):
            db.execute(
                "INSERT INTO counters (metric, label, value) VALUES (?, ?, 1)"
                " ON CONFLICT (metric, label) DO UPDATE SET value = value + 1",
                (change.metric, change.label),
            )
        elif isinstance(change, OrderValue):
            bound = bucket_of(change.nanos)
            db.execute(
                "INSERT INTO order_values (bucket, count, dollars) VALUES (?, 1, ?)"
                " ON CONFLICT (bucket) DO UPDATE SET count = count + 1,"
                " dollars = dollars + excluded.dollars",
                (_INFINITY if bound is None else str(bound), change.dollars),
            )


def _labelled(counters: dict[tuple[str, str], int], metric: str) -> dict[str, int]:
    return {label: value for (name, label), value in sorted(counters.items()) if name == metric}


def _histogram(rows: list[tuple[str, int, float]]) -> OrderValues:
    bounds = [
        (math.inf if bucket == _INFINITY else float(bucket), count) for bucket, count, _ in rows
    ]
    cumulative = tuple(
        (bound, sum(count for upper, count in bounds if upper <= bound))
        for bound in ORDER_VALUE_BUCKETS
    )
    return OrderValues(
        buckets=cumulative,
        count=sum(count for _, count in bounds),
        sum_dollars=math.fsum(dollars for _, _, dollars in rows),
    )
