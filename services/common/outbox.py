"""The transactional outbox, and its mirror, the inbox: events that leave a service
exactly when its state changes, and consumers whose effects happen once per event.

A state change and the events it causes are written in one SQLite transaction: the
change's own statements, then `record(db, topic, event)` on the same connection. So
an event exists if and only if its change committed; a crash or a broker outage loses
neither. `OutboxRelay` then publishes the outbox, each stream in commit order (the
streams of a batch side by side), and marks what the broker stored. A stream stops at
its first event the broker refuses and starts again from it, so the events of a
stream are published in order, and the relay republishes what it could not mark:
delivery is at least once, and the broker drops a republished event id within its
dedupe window (mesh.events).

A consumer that must not apply an event twice uses `Inbox.handle`: its effect and the
record of the event id are written in one transaction, so a redelivered event changes
nothing.

Instances of a service share its database; each may run a relay. A relay claims the
outbox with a lease row, so one publishes at a time (two relays publishing the same
rows concurrently could interleave a stream's events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mesh.backoff import Backoff
from mesh.events import BrokerUnavailable, Event
from mesh.storage import Database

__all__ = ["OUTBOX_SCHEMA", "Inbox", "OutboxRelay", "Publisher", "next_version", "record"]

log = logging.getLogger("services.outbox")

OUTBOX_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS outbox (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        occurred_at REAL NOT NULL,
        published_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (position) WHERE published_at IS NULL",
    "CREATE INDEX IF NOT EXISTS outbox_stream ON outbox (stream, version)",
    """CREATE TABLE IF NOT EXISTS outbox_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        until REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS inbox (
        consumer TEXT NOT NULL,
        event_id TEXT NOT NULL,
        handled_at REAL NOT NULL,
        PRIMARY KEY (consumer, event_id)
    )""",
)
"""Add these to the service's own schema (mesh.storage.Database's `schema`)."""

_BATCH = 100
_LEASE = 5.0  # seconds a relay holds the outbox without renewing


class Publisher(Protocol):
    """What a relay publishes through: an EventBus, or anything with its `publish`."""

    async def publish(self, topic: str, event: Event) -> None: ...


def next_version(db: sqlite3.Connection, stream: str) -> int:
    """The version the next event of `stream` gets: one more than its outbox holds (for
    services whose outbox is their streams' only record)."""
    (version,) = db.execute(
        "SELECT COALESCE(MAX(version), 0) FROM outbox WHERE stream = ?", (stream,)
    ).fetchone()
    return int(version) + 1


def record(db: sqlite3.Connection, topic: str, event: Event) -> None:
    """Add `event` to the outbox, inside the caller's write transaction (`db` is the
    connection of `Database.write()`), so it commits or rolls back with the change."""
    db.execute(
        "INSERT INTO outbox (event_id, topic, stream, version, type, data, occurred_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (event.id, topic, event.stream, event.version, event.type, event.data, event.occurred_at),
    )


class OutboxRelay:
    """Publishes a database's outbox to the bus, each stream in commit order, until
    cancelled.

    `notify()` after a commit wakes it at once; otherwise it looks every `poll` s
    (which also picks up what another instance committed)."""

    def __init__(
        self,
        db: Database,
        bus: Publisher,
        *,
        poll: float = 0.2,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        self._db = db
        self._bus = bus
        self._poll = poll
        self._clock = clock
        self._holder = holder or f"{os.getpid()}-{id(self):x}"
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lease_until = 0.0  # when this relay's claim on the outbox ends (0: none)
        self._marking: asyncio.Future[None] | None = None  # the last batch's marking
        self._marking_positions: frozenset[int] = frozenset()  # ... and its events
        self._backoff = Backoff(initial=0.1, maximum=5.0)
        self.published = 0
        """Events this relay has published (republished ones included)."""

    def notify(self) -> None:
        """Wake the relay to publish at once; from any thread (stores commit on worker
        threads)."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        failures = 0
        try:
            while True:
                # Cleared before the batch is read: a notify() from then on ends the wait.
                self._wake.clear()
                try:
                    sent = await self._publish_batch()
                except BrokerUnavailable as error:
                    failures += 1
                    delay = self._backoff.delay(failures - 1)
                    log.warning("broker unavailable, retrying in %.1fs: %s", delay, error)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if sent == 0:
                    await self._marked()
                    with contextlib.suppress(TimeoutError):  # poll: another instance's commits
                        await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
        finally:
            await self._marked()  # nothing it published is left unmarked once it stops

    async def publish_pending(self) -> int:
        """Publish one batch of what is unpublished and mark it; the count published (0
        if there is none, or another instance's relay holds the outbox).

        The batch's streams are published side by side, each stream's events one after
        another in commit order. So a batch costs about one round trip to the broker
        rather than one per event (under load, when each round trip waits for a busy
        loop and core, one per event is what kept the relay behind its service), and a
        stream's order holds whatever the broker refuses.

        Raises:
            BrokerUnavailable: the broker refused an event: its stream's later events of
                the batch were not sent; every event the broker stored is marked.
        """
        try:
            return await self._publish_batch()
        finally:
            await self._marked()

    async def _publish_batch(self) -> int:
        """One batch, as publish_pending, but its marking (a write transaction on a
        worker thread, which under load waits behind the service's own writes) runs on
        while `run` reads and sends the next batch, which leaves those events out. One
        marking runs at a time; `_marked()` waits for it."""
        if not await self._hold_lease():
            return 0
        marking = self._marking_positions
        rows = self._db.query(
            "SELECT position, event_id, topic, stream, version, type, data, occurred_at"
            " FROM outbox WHERE published_at IS NULL ORDER BY position LIMIT ?",
            (_BATCH + len(marking),),
        )
        streams: dict[str, list[tuple[int, str, Event]]] = {}
        unsent = [row for row in rows if row[0] not in marking][:_BATCH]
        for position, event_id, topic, stream, version, kind, data, occurred_at in unsent:
            event = Event(
                id=event_id,
                stream=stream,
                type=kind,
                data=bytes(data),
                occurred_at=occurred_at,
                version=version,
            )
            streams.setdefault(stream, []).append((position, topic, event))
        done: list[int] = []

        async def publish_stream(events: Sequence[tuple[int, str, Event]]) -> None:
            for position, topic, event in events:
                await self._bus.publish(topic, event)
                done.append(position)
                self.published += 1

        try:
            outcomes = await asyncio.gather(
                *(publish_stream(events) for events in streams.values()), return_exceptions=True
            )
        finally:
            await self._marked()
            if done:
                self._marking_positions = frozenset(done)
                self._marking = asyncio.ensure_future(asyncio.to_thread(self._mark, done))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(done)

    async def _marked(self) -> None:
        """Until the marking in progress, if any, has committed (or failed: its events
        are then published again, which at-least-once allows)."""
        marking, self._marking = self._marking, None
        try:
            if marking is not None:
                await marking
        finally:
            self._marking_positions = frozenset()

    async def _hold_lease(self) -> bool:
        """Whether this relay holds the outbox, claiming it (or renewing its claim) once
        less than half of the lease is left. A claim is a write transaction, which under
        load waits behind the service's own writes: not one per batch (marking a batch
        renews the lease too)."""
        if self._clock() < self._lease_until - _LEASE / 2:
            return True
        return await asyncio.to_thread(self._claim)

    def _claim(self) -> bool:
        now = self._clock()
        with self._db.write() as db:
            row = db.execute("SELECT holder, until FROM outbox_lease WHERE id = 1").fetchone()
            if row is not None and row[0] != self._holder and row[1] > now:
                self._lease_until = 0.0
                return False
            db.execute(
                "INSERT INTO outbox_lease (id, holder, until) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, until = excluded.until",
                (self._holder, now + _LEASE),
            )
        self._lease_until = now + _LEASE
        return True

    def _mark(self, positions: Sequence[int]) -> None:
        """Mark `positions` published and, in the same transaction, renew the lease if
        this relay still holds it."""
        now = self._clock()
        with self._db.write() as db:
            db.executemany(
                "UPDATE outbox SET published_at = ? WHERE position = ?",
                [(now, position) for position in positions],
            )
            renewed = db.execute(
                "UPDATE outbox_lease SET until = ? WHERE id = 1 AND holder = ?",
                (now + _LEASE, self._holder),
            ).rowcount
        if renewed:
            self._lease_until = now + _LEASE


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a worker thread
        return None


class Inbox:
    """Exactly-once effects for one consumer over at-least-once delivery."""

    def __init__(self, db: Database, consumer: str, *, clock: Callable[[], float] = time.time):
        self._db = db
        self._consumer = consumer
        self._clock = clock

    def handle(self, event: Event, apply: Callable[[sqlite3.Connection, Event], None]) -> bool:
        """Run `apply(db, event)` and record the event in one transaction, unless it was
        handled before; True if it ran. (Blocking: call it through asyncio.to_thread.)"""
        with self._db.write() as db:
            seen = db.execute(
                "SELECT 1 FROM inbox WHERE consumer = ? AND event_id = ?",
                (self._consumer, event.id),
            ).fetchone()
            if seen is not None:
                return False
            apply(db, event)
            db.execute(
                "INSERT INTO inbox (consumer, event_id, handled_at) VALUES (?, ?, ?)",
                (self._consumer, event.id, self._clock()),
            )
        return True
