"""Notifications in SQLite, `<data_dir>/notification.db` (WAL, shared by every instance
through a `mesh.storage.Database`).

An event's notification and the record that the event was handled are written in one
transaction (services.common.outbox.Inbox), so a redelivered event adds nothing; the
unique `event_id` column restates it. `seq` numbers the notifications in the order
they were made, across users and instances: newest first is `seq DESC`, and a watch
continues after the last `seq` it sent.

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from mesh.events import Event
from mesh.storage import Database
from services.common.outbox import OUTBOX_SCHEMA, Inbox
from services.notification.domain import Draft, Notification

__all__ = ["CONSUMER", "NotificationStore"]

CONSUMER = "notification"
"""The consumer name on the bus, and the inbox's."""

_SCHEMA = (
    *OUTBOX_SCHEMA,  # its inbox table; the outbox stays empty (nothing is published)
    """
    CREATE TABLE IF NOT EXISTS notifications (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT NOT NULL UNIQUE,
        user_id        TEXT NOT NULL,
        event_type     TEXT NOT NULL,
        text           TEXT NOT NULL,
        create_time_ns INTEGER NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, seq)",
)

_COLUMNS = "seq, user_id, text, event_type, create_time_ns"
_LAST = 2**63 - 1


class NotificationStore:
    """Notifications by user. Open with `NotificationStore(path)`; the schema is created
    if missing.

    Args:
        clock: the current time in nanoseconds since the epoch (a notification's
            create time).
    """

    def __init__(self, path: Path, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)
        self._inbox = Inbox(self._db, CONSUMER, clock=lambda: clock() / 1e9)
        self._clock = clock

    def close(self) -> None:
        self._db.close()

    def add(self, event: Event, draft: Draft) -> bool:
        """Store the notification `event` makes, unless the event was handled before;
        True if it was stored now."""

        def insert(db: sqlite3.Connection, handled: Event) -> None:
            db.execute(
                "INSERT INTO notifications (event_id, user_id, event_type, text, create_time_ns)"
                " VALUES (?, ?, ?, ?, ?)",
                (handled.id, draft.user_id, handled.type, draft.text, self._clock()),
            )

        return self._inbox.handle(event, insert)

    def page(
        self, user_id: str, *, before: int | None, limit: int
    ) -> tuple[list[Notification], int | None]:
        """Up to `limit` of `user_id`'s notifications, newest first, older than cursor
        `before` if given; and the cursor to continue from if there are more."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM notifications WHERE user_id = ? AND seq < ?"
            " ORDER BY seq DESC LIMIT ?",
            (user_id, _LAST if before is None else before, limit + 1),
        )
        found = [Notification(*row) for row in rows[:limit]]
        return found, (found[-1].seq if len(rows) > limit else None)

    def after(self, user_id: str, seq: int, *, limit: int) -> list[Notification]:
        """Up to `limit` of `user_id`'s notifications made after `seq`, oldest first."""
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM notifications WHERE user_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (user_id, seq, limit),
        )
        return [Notification(*row) for row in rows]

    def newest_seq(self) -> int:
        """The seq of the newest notification of anyone (0 if there is none)."""
        return int(self._db.query("SELECT COALESCE(MAX(seq), 0) FROM notifications")[0][0])

    def data_version(self) -> int:
        """A number that changes whenever an instance commits to the file."""
        return self._db.data_version()
