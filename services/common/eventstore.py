"""An append-only event store in SQLite, for services whose state is the fold of their
events, generic over the aggregate.

Each aggregate is one stream of events numbered 1, 2, 3, ... (its versions). A writer
reads the aggregate, decides, and appends saying which version it decided on; if the
stream has moved on since, the append fails with `VersionConflict` (an `Aborted`: the
caller re-reads and retries). Every event also gets a global `position`, increasing in
commit order across all streams, which projections use to read "everything since".

Instances of a service are separate processes sharing the file (`mesh.storage.Database`,
WAL mode). An append is one `BEGIN IMMEDIATE` transaction, so its version check and its
inserts hold the database's write lock together: no other process can append between
them. The UNIQUE (stream, version) constraint states the same rule in the schema, so it
holds even for a writer that skipped the check.

Snapshots are a cache: the state of a stream at some version, so that loading replays
only the events after it. A snapshot of another state schema is ignored, never migrated.
Events are never rewritten either: `Upcasters` bring payloads stored under an old schema
to the newest one as they are read.

Publishing: a store opened with an `outbox_topic` also records every event it appends
in its transactional outbox (services.common.outbox), in the append's own transaction:
an event is published if and only if it was stored. It records the event as `read`
returns it (upcast, so consumers see only the newest schemas), with the stored event's
id, and `recorded_at` as the time it occurred. The service relays the outbox
(services.common.messaging.relay_outbox on `database`).

Reads are quick and never wait for a writer: call them on the event loop. Appends may
wait for another instance's write lock: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mesh.events import Event
from mesh.problems import Aborted, quoted
from mesh.storage import Database
from services.common.outbox import OUTBOX_SCHEMA, record

__all__ = [
    "READ_ALL_LIMIT",
    "Aggregate",
    "EventStore",
    "NewEvent",
    "Snapshot",
    "StoredEvent",
    "Upcaster",
    "Upcasters",
    "VersionConflict",
]

READ_ALL_LIMIT = 1000
"""Events one `read_all` returns unless told otherwise."""

_SCHEMA = (
    # AUTOINCREMENT: a position is never reused, even after the newest row is deleted.
    """
    CREATE TABLE IF NOT EXISTS events (
        position       INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT NOT NULL UNIQUE,
        stream         TEXT NOT NULL,
        version        INTEGER NOT NULL CHECK (version >= 1),
        type           TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB NOT NULL,
        recorded_at    INTEGER NOT NULL,
        UNIQUE (stream, version)
    )
    """,
    # One snapshot per stream, the newest saved.
    """
    CREATE TABLE IF NOT EXISTS snapshots (
        stream         TEXT PRIMARY KEY,
        version        INTEGER NOT NULL CHECK (version >= 1),
        state_type     TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data           BLOB NOT NULL,
        recorded_at    INTEGER NOT NULL
    )
    """,
)

_EVENT_COLUMNS = "stream, version, position, event_id, type, schema_version, data, recorded_at"
_SELECT_STREAM = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream = ? AND version > ? ORDER BY version"
)

S = TypeVar("S")

Upcaster = Callable[[bytes], tuple[bytes, int]]
"""Turns a payload of one schema version into a later one: (new bytes, its version)."""


@dataclass(frozen=True)
class NewEvent:
    """An event to append: its `type` (such as the full protobuf message name), its
    payload, and the version of the payload's schema."""

    type: str
    data: bytes
    schema_version: int = 1


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: `version` is its 1-based place in its stream, `position` its
    place among all events, `recorded_at` the epoch nanoseconds of its append."""

    stream: str
    version: int
    position: int
    event_id: str
    type: str
    schema_version: int
    data: bytes
    recorded_at: int


@dataclass(frozen=True)
class Snapshot:
    """The state of `stream` after its event `version`, encoded as `state_type` of
    schema `schema_version`."""

    stream: str
    version: int
    state_type: str
    schema_version: int
    data: bytes
    recorded_at: int


class VersionConflict(Aborted):
    """The stream is not at the version the caller decided on: another writer appended
    first. Re-read the stream and retry."""

    def __init__(self, stream: str, expected_version: int, actual_version: int) -> None:
        self.stream = stream
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {quoted(stream)} is at version {actual_version},"
            f" not the expected version {expected_version}"
        )


class Upcasters:
    """How payloads stored under old schemas become the newest: one upcaster per
    (event type, schema version), applied in turn until none is registered for the
    version reached."""

    def __init__(self) -> None:
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, type: str, from_schema_version: int, upcaster: Upcaster) -> None:
        """Read `type` payloads of `from_schema_version` through `upcaster`.

        Raises:
            ValueError: one is registered for that type and version already.
        """
        key = (type, from_schema_version)
        if key in self._upcasters:
            raise ValueError(f"an upcaster of {type} from schema {from_schema_version} exists")
        self._upcasters[key] = upcaster

    def upcast(self, event: StoredEvent) -> StoredEvent:
        """`event` with its payload in the newest schema there is an upcaster to.

        Raises:
            ValueError: an upcaster did not move to a later schema version.
        """
        data, version = event.data, event.schema_version
        while (upcaster := self._upcasters.get((event.type, version))) is not None:
            data, upcast_to = upcaster(data)
            if upcast_to <= version:
                raise ValueError(
                    f"the upcaster of {event.type} from schema {version} returned {upcast_to}"
                )
            version = upcast_to
        if version == event.schema_version:
            return event
        return dataclasses.replace(event, data=data, schema_version=version)


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """How to rebuild one kind of state from its stream: `fold` each event into the
    state, starting from `initial`, and how to snapshot it every `snapshot_every`
    events (as `state_type` of `schema_version`, through `encode` and `decode`)."""

    initial: S
    fold: Callable[[S, StoredEvent], S]
    state_type: str
    encode: Callable[[S], bytes]
    decode: Callable[[bytes], S]
    schema_version: int = 1
    snapshot_every: int = 100

    def __post_init__(self) -> None:
        if self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be positive, not {self.snapshot_every}")


class EventStore:
    """Streams of events and their snapshots in one SQLite file. Open with
    `EventStore(path)`; the schema is created if missing.

    Args:
        outbox_topic: if set, every appended event is also recorded in the outbox (of
            the same file) for this topic, in the append's transaction.
    """

    def __init__(
        self,
        path: Path,
        *,
        upcasters: Upcasters | None = None,
        clock: Callable[[], int] = time.time_ns,
        outbox_topic: str | None = None,
    ) -> None:
        self.path = path
        self._upcasters = upcasters or Upcasters()
        self._clock = clock
        self._outbox_topic = outbox_topic
        schema = (*_SCHEMA, *OUTBOX_SCHEMA) if outbox_topic is not None else _SCHEMA
        self._db = Database(path, schema)

    @property
    def database(self) -> Database:
        """The SQLite file underneath, for its outbox's relay."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def append(
        self, stream: str, expected_version: int, events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        """Append `events` to `stream`, which must be at `expected_version` (0: the
        stream is new), all or none. Returns them as `read` will. With an outbox
        topic, they are recorded in the outbox in the same transaction.

        Raises:
            ValueError: `stream` is empty, `expected_version` negative, `events` empty,
                or an event has no type or a schema version below 1 (with an outbox
                topic: or the stream or type is not printable ASCII, as events on the
                bus must be); nothing was appended.
            VersionConflict: the stream is at another version; nothing was appended.
        """
        _check_stream(stream)
        if expected_version < 0:
            raise ValueError(f"expected_version must not be negative, not {expected_version}")
        if not events:
            raise ValueError("there must be at least one event to append")
        for event in events:
            if not event.type or event.schema_version < 1:
                raise ValueError(f"an event needs a type and a schema version >= 1: {event!r}")
        recorded_at = self._clock()
        rows = [
            (
                str(uuid.uuid4()),
                stream,
                version,
                e.type,
                e.schema_version,
                bytes(e.data),
                recorded_at,
            )
            for version, e in enumerate(events, start=expected_version + 1)
        ]
        with self._db.write() as db:
            actual = _stream_version(db, stream)
            if actual != expected_version:
                raise VersionConflict(stream, expected_version, actual)
            try:
                db.executemany(
                    "INSERT INTO events (event_id, stream, version, type, schema_version, data,"
                    " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except sqlite3.IntegrityError as error:
                # NOTE: reached only by a writer that skipped the check above; event ids
                # are random, so the constraint that failed is UNIQUE (stream, version).
                if error.sqlite_errorcode != sqlite3.SQLITE_CONSTRAINT_UNIQUE:
                    raise
                raise VersionConflict(stream, expected_version, actual) from error
            rows = db.execute(_SELECT_STREAM, (stream, expected_version)).fetchall()
            stored = self._events(rows)
            if self._outbox_topic is not None:
                for appended in stored:
                    record(db, self._outbox_topic, _published(appended))
        return stored

    def read(self, stream: str, from_version: int = 1) -> list[StoredEvent]:
        """The events of `stream` from `from_version` on, oldest first, upcast."""
        if from_version < 1:
            raise ValueError(f"from_version must be at least 1, not {from_version}")
        return self._events(self._db.query(_SELECT_STREAM, (stream, from_version - 1)))

    def read_all(self, after_position: int = 0, limit: int = READ_ALL_LIMIT) -> list[StoredEvent]:
        """At most `limit` events of every stream after `after_position`, in position
        order, upcast. Positions increase in commit order (writes take the one write
        lock), so a reader that resumes after the last position it saw misses nothing."""
        if after_position < 0:
            raise ValueError(f"after_position must not be negative, not {after_position}")
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        rows = self._db.query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        )
        return self._events(rows)

    def version(self, stream: str) -> int:
        """The version of `stream`: the number of its events, 0 if it has none."""
        with self._db.read() as db:
            return _stream_version(db, stream)

    def save_snapshot(
        self, stream: str, version: int, state_type: str, schema_version: int, data: bytes
    ) -> None:
        """Keep `data` as the state of `stream` after event `version`, unless a snapshot
        of a later version is kept already.

        Raises:
            ValueError: `stream` has no event `version`.
        """
        _check_stream(stream)
        with self._db.write() as db:
            if not 1 <= version <= _stream_version(db, stream):
                raise ValueError(f"stream {stream!r} has no version {version} to snapshot")
            db.execute(
                "INSERT INTO snapshots (stream, version, state_type, schema_version, data,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET version = excluded.version,"
                " state_type = excluded.state_type, schema_version = excluded.schema_version,"
                " data = excluded.data, recorded_at = excluded.recorded_at"
                " WHERE excluded.version >= snapshots.version",
                (stream, version, state_type, schema_version, bytes(data), self._clock()),
            )

    def latest_snapshot(self, stream: str) -> Snapshot | None:
        """The snapshot of `stream` at its latest version, or None."""
        rows = self._db.query(
            "SELECT stream, version, state_type, schema_version, data, recorded_at"
            " FROM snapshots WHERE stream = ?",
            (stream,),
        )
        return Snapshot(*rows[0]) if rows else None

    def load(self, stream: str, aggregate: Aggregate[S]) -> tuple[S, int]:
        """The state of `stream` and its version: the latest snapshot, if it is of the
        aggregate's state type and schema, with the events after it folded in."""
        with self._db.read() as db:
            row = db.execute(
                "SELECT version, data FROM snapshots"
                " WHERE stream = ? AND state_type = ? AND schema_version = ?",
                (stream, aggregate.state_type, aggregate.schema_version),
            ).fetchone()
            rows = db.execute(_SELECT_STREAM, (stream, row[0] if row else 0)).fetchall()
        state, version = (aggregate.decode(row[1]), row[0]) if row else (aggregate.initial, 0)
        for event in self._events(rows):
            state, version = aggregate.fold(state, event), event.version
        return state, version

    def append_and_snapshot(
        self,
        stream: str,
        aggregate: Aggregate[S],
        state: S,
        expected_version: int,
        events: Sequence[NewEvent],
    ) -> tuple[S, int]:
        """Append `events` to `stream` as `append` does, given its `state` at
        `expected_version` (as `load` returned them); returns the state and version after
        them. If the stream passed a multiple of the aggregate's `snapshot_every`, the new
        state is saved as a snapshot (a second, separate transaction: a snapshot is only
        a cache, and one that is missed is taken at the next multiple)."""
        stored = self.append(stream, expected_version, events)
        for event in stored:
            state = aggregate.fold(state, event)
        version = stored[-1].version
        if version // aggregate.snapshot_every > expected_version // aggregate.snapshot_every:
            self.save_snapshot(
                stream,
                version,
                aggregate.state_type,
                aggregate.schema_version,
                aggregate.encode(state),
            )
        return state, version

    def _events(self, rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
        return [self._upcasters.upcast(StoredEvent(*row)) for row in rows]


def _published(event: StoredEvent) -> Event:
    return Event(
        id=event.event_id,
        stream=event.stream,
        type=event.type,
        data=event.data,
        occurred_at=event.recorded_at / 1e9,
        version=event.version,
    )


def _check_stream(stream: str) -> None:
    if not stream:
        raise ValueError("a stream needs a name")


def _stream_version(db: sqlite3.Connection, stream: str) -> int:
    (version,) = db.execute(
        "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?", (stream,)
    ).fetchone()
    return int(version)
