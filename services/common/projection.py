"""Read models (the query side of CQRS): tables in a service's own database, kept as a
projection of the events other services publish, and rebuilt from the broker's log.

A `Projection` applies each event in one transaction with the record of how far each
stream got (`projection_streams`): an event whose stream version it has applied
already is skipped, so a redelivery changes nothing and an older event never
overwrites a newer state. An event that cannot be applied (a payload that does not
parse: `ValueError` from `apply`) is logged and skipped; any other failure rolls back
and the bus delivers the event again.

`rebuild(bus)` takes the database's write lock, reads every event of the projection's
topics from the broker, empties the read model, applies them all and commits: one
transaction, so readers see the old model until the new one is whole, and no live
event can be applied (and acknowledged) between the read and the commit. Events
stored after the read wait for the live subscription, which applies them next.

`lag(bus)` is how far behind the projection is: the events its consumer has not
acknowledged, and the seconds between the newest event stored and the newest applied.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from mesh.errors import BrokerUnavailable
from mesh.events import Event, EventBus, Handler
from mesh.problems import DependencyFailed
from mesh.storage import Database

__all__ = [
    "PROJECTION_SCHEMA",
    "Apply",
    "Lag",
    "Projection",
    "ProjectionStatus",
    "Reset",
    "projection_status",
    "rebuild_projection",
]

log = logging.getLogger("services.projection")

PROJECTION_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS projection_streams (
        projection TEXT NOT NULL,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (projection, stream)
    )""",
    """CREATE TABLE IF NOT EXISTS projection_topics (
        projection TEXT NOT NULL,
        topic TEXT NOT NULL,
        applied INTEGER NOT NULL,
        last_occurred_at REAL NOT NULL,
        PRIMARY KEY (projection, topic)
    )""",
)
"""Add these to the service's own schema (mesh.storage.Database's `schema`)."""

Apply = Callable[[sqlite3.Connection, str, Event], None]
"""Applies one event of a topic to the read model, on the write transaction's
connection; raises ValueError for an event it cannot read."""
Reset = Callable[[sqlite3.Connection], None]
"""Empties the read model's own tables (a rebuild starts with it)."""


@dataclass(frozen=True)
class Lag:
    """How far a projection is behind its topics: `events` not applied yet, and
    `seconds` between the newest event stored and the newest one applied."""

    events: int
    seconds: float


class Projection:
    """A read model named `name` (also its consumer's name on the bus) built from
    `topics` by `apply`, emptied by `reset`."""

    def __init__(
        self,
        db: Database,
        name: str,
        topics: Sequence[str],
        apply: Apply,
        reset: Reset,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.topics = tuple(topics)
        self._db = db
        self._apply = apply
        self._reset = reset
        self._clock = clock

    def handler(self, topic: str) -> Handler:
        """The bus handler for `topic`: applies each event off the event loop."""

        async def handle(event: Event) -> None:
            await asyncio.to_thread(self.handle, topic, event)

        return handle

    def handle(self, topic: str, event: Event) -> bool:
        """Apply `event` of `topic` unless its stream is at its version already; True if
        it was applied. Blocking: call it through asyncio.to_thread."""
        with self._db.write() as db:
            return self._applied(db, topic, event)

    def applied(self) -> int:
        """Events applied since the read model was last built."""
        rows = self._db.query(
            "SELECT COALESCE(SUM(applied), 0) FROM projection_topics WHERE projection = ?",
            (self.name,),
        )
        return int(rows[0][0])

    async def lag(self, bus: EventBus) -> Lag:
        """How far behind the broker the read model is.

        Raises:
            BrokerUnavailable: the broker did not answer.
        """
        last = dict(
            self._db.query(
                "SELECT topic, last_occurred_at FROM projection_topics WHERE projection = ?",
                (self.name,),
            )
        )
        events, seconds = 0, 0.0
        for topic in self.topics:
            backlog = await bus.backlog(topic, self.name)
            events += backlog.events
            if backlog.events and backlog.newest_at is not None:
                applied_at = last.get(topic)
                behind = backlog.newest_at - applied_at if applied_at else 0.0
                seconds = max(seconds, behind)
        return Lag(events=events, seconds=round(seconds, 3))

    async def rebuild(self, bus: EventBus) -> int:
        """Build the read model again from every event the broker stores for its
        topics (see the module's note); the number of events applied.

        Raises:
            BrokerUnavailable: the broker did not answer; the read model is unchanged.
        """
        loop = asyncio.get_running_loop()

        def history(topic: str) -> list[Event]:
            return asyncio.run_coroutine_threadsafe(bus.history(topic), loop).result()

        def rebuild() -> int:
            with self._db.write() as db:  # holds the write lock across the read
                logs = {topic: history(topic) for topic in self.topics}
                self._reset(db)
                db.execute("DELETE FROM projection_streams WHERE projection = ?", (self.name,))
                db.execute("DELETE FROM projection_topics WHERE projection = ?", (self.name,))
                return sum(
                    self._applied(db, topic, event)
                    for topic, events in logs.items()
                    for event in events
                )

        applied = await asyncio.to_thread(rebuild)
        log.info("projection %s rebuilt from %d events", self.name, applied)
        return applied

    def _applied(self, db: sqlite3.Connection, topic: str, event: Event) -> bool:
        row = db.execute(
            "SELECT version FROM projection_streams WHERE projection = ? AND stream = ?",
            (self.name, event.stream),
        ).fetchone()
        if row is not None and row[0] >= event.version:
            return False
        db.execute("SAVEPOINT apply_event")  # undo a half-applied event it skips
        try:
            self._apply(db, topic, event)
        except ValueError as error:
            db.execute("ROLLBACK TO apply_event")
            log.warning(
                "projection %s: skipped event %s (%s of %s): %s",
                self.name,
                event.id,
                event.type,
                event.stream,
                error,
            )
        db.execute("RELEASE apply_event")
        db.execute(
            "INSERT INTO projection_streams (projection, stream, version) VALUES (?, ?, ?)"
            " ON CONFLICT (projection, stream) DO UPDATE SET version = excluded.version",
            (self.name, event.stream, event.version),
        )
        db.execute(
            "INSERT INTO projection_topics (projection, topic, applied, last_occurred_at)"
            " VALUES (?, ?, 1, ?) ON CONFLICT (projection, topic) DO UPDATE SET"
            " applied = applied + 1, last_occurred_at = MAX(last_occurred_at, excluded.last_occurred_at)",
            (self.name, topic, event.occurred_at),
        )
        return True


@dataclass(frozen=True)
class ProjectionStatus:
    """What a read model's GetProjectionStatus answers: its lag, and what it applied."""

    events_behind: int
    seconds_behind: float
    events_applied: int


BusOf = Callable[[], Awaitable[EventBus]]
"""Gives the mesh's event bus (Runtime.event_bus)."""


async def projection_status(projection: Projection, bus: BusOf) -> ProjectionStatus:
    """`projection`'s status, for the query side.

    Raises:
        DependencyFailed: UNAVAILABLE, the broker did not answer (callers neither retry
            it nor hold it against this instance: the instance is fine).
    """
    try:
        lag = await projection.lag(await bus())
    except BrokerUnavailable as error:
        raise _broker_failed(error) from error
    return ProjectionStatus(lag.events, lag.seconds, projection.applied())


async def rebuild_projection(projection: Projection, bus: BusOf) -> int:
    """Rebuild `projection` from the broker's log, for the command side; the events
    applied.

    Raises:
        DependencyFailed: UNAVAILABLE, the broker did not answer; nothing changed.
    """
    try:
        return await projection.rebuild(await bus())
    except BrokerUnavailable as error:
        raise _broker_failed(error) from error


def _broker_failed(error: BrokerUnavailable) -> DependencyFailed:
    return DependencyFailed(grpc.StatusCode.UNAVAILABLE, f"the event broker: {error}")
