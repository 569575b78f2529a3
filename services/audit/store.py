"""The audit log in SQLite, `<data_dir>/audit.db` (WAL, shared by every instance through
a `mesh.storage.Database`).

The log is append-only, and the database itself holds it so, whatever connects to the
file: triggers refuse every UPDATE and DELETE of a row, and an INSERT that would
replace one (`INSERT OR REPLACE` deletes the row it conflicts with without firing
delete triggers, so it gets a trigger of its own). This module only ever inserts.

An event is recorded once: `append` looks its id up and inserts in one write
transaction (which takes the write lock first), so a redelivery, to this instance or
another, adds nothing; the unique `event_id` column restates it. `position` numbers
the entries in the order they were recorded.

Reads are quick and never wait for a writer: call them on the event loop. Writes may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mesh.events import Event
from mesh.storage import Database
from services.audit.domain import MAX_NS, Query, clamp_ns

__all__ = ["APPEND_ONLY", "AuditStore", "Entry"]

APPEND_ONLY = "the audit log is append-only"
"""The error message of a refused change of the log."""

_SCHEMA = (
    # Times are whole nanoseconds since the epoch, so filters compare exactly.
    """
    CREATE TABLE IF NOT EXISTS audit_log (
        position       INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT NOT NULL UNIQUE,
        topic          TEXT NOT NULL,
        stream         TEXT NOT NULL,
        version        INTEGER NOT NULL,
        type           TEXT NOT NULL,
        occurred_at_ns INTEGER NOT NULL,
        recorded_at_ns INTEGER NOT NULL,
        payload        BLOB NOT NULL,
        payload_json   TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_by_stream ON audit_log (stream, position)",
    "CREATE INDEX IF NOT EXISTS audit_by_topic ON audit_log (topic, position)",
    "CREATE INDEX IF NOT EXISTS audit_by_type ON audit_log (type, position)",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit_log (occurred_at_ns)",
    f"""
    CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS audit_log_no_replace BEFORE INSERT ON audit_log
    WHEN EXISTS (
        SELECT 1 FROM audit_log WHERE event_id = NEW.event_id OR position = NEW.position
    )
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END
    """,
)

_COLUMNS = (
    "position, event_id, topic, stream, version, type, occurred_at_ns, recorded_at_ns,"
    " payload, payload_json"
)


@dataclass(frozen=True)
class Entry:
    """One recorded event. `payload_json` is "" when the payload has no JSON form."""

    position: int
    event_id: str
    topic: str
    stream: str
    version: int
    type: str
    occurred_at_ns: int
    recorded_at_ns: int
    payload: bytes
    payload_json: str


class AuditStore:
    """The append-only log. Open with `AuditStore(path)`; the schema is created if
    missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def append(self, topic: str, event: Event, *, payload_json: str, recorded_at_ns: int) -> bool:
        """Record `event` of `topic`, unless its id is in the log already; True if it
        was recorded now. Its occurred_at is held within MIN_NS to MAX_NS.

        Raises:
            ValueError: its version is beyond what the log can hold (above MAX_NS).
        """
        if event.version > MAX_NS:
            raise ValueError(f"version {event.version} is too large to store")
        occurred_at_ns = clamp_ns(round(event.occurred_at * 1e9))
        with self._db.write() as db:
            seen = db.execute("SELECT 1 FROM audit_log WHERE event_id = ?", (event.id,))
            if seen.fetchone() is not None:
                return False
            db.execute(
                "INSERT INTO audit_log (event_id, topic, stream, version, type, occurred_at_ns,"
                " recorded_at_ns, payload, payload_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    topic,
                    event.stream,
                    event.version,
                    event.type,
                    occurred_at_ns,
                    recorded_at_ns,
                    event.data,
                    payload_json,
                ),
            )
        return True

    def query(self, query: Query) -> tuple[list[Entry], int | None]:
        """The entries matching `query`, by position; and the position to continue
        after if there are more."""
        where: list[str] = ["position > ?"]
        args: list[object] = [query.after]
        for column, value in (
            ("stream", query.stream),
            ("topic", query.topic),
            ("type", query.event_type),
        ):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since_ns is not None:
            where.append("occurred_at_ns >= ?")
            args.append(query.since_ns)
        if query.until_ns is not None:
            where.append("occurred_at_ns < ?")
            args.append(query.until_ns)
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(where)}"
            " ORDER BY position LIMIT ?",
            (*args, query.size + 1),
        )
        entries = [Entry(*row) for row in rows[: query.size]]
        return entries, (entries[-1].position if len(rows) > query.size else None)
