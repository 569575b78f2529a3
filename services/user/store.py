"""User's event store, `<data_dir>/user.db`: each user is a stream of events, and the
user's state is their replay (services.common.eventstore).

The stream of user `usr-...` is "user-usr-...". Its events are the protobuf messages
of shop/user/v1/events.proto, stored under their full names with their schema
versions (`SCHEMA_VERSIONS`), and turned into services.user.domain's events here, so
the domain never sees protobuf. Every `snapshot_every` events the user's state is
saved as a UserSnapshot, so that a load folds at most that many events; a snapshot is
only a cache, and one of another schema is ignored.

Upcasting: schema 1 of UserRegistered had a `name`, schema 2 a `display_name` in its
place. Rows written under schema 1 stay as they are; `upcasters()` reads them as
schema 2 (`registered_schema_1_to_2`), so the domain, the snapshots and ListUserEvents
only ever see schema 2, and the change needed no migration. A payload of a newer
schema than this service knows (written by a newer replica) is read by protobuf's
rules: fields it does not know are ignored.

Optimistic concurrency: `execute` loads the user, decides, and appends saying which
version it decided on; every instance of the service shares the file, and the event
store's append fails if any of them appended since. A command that named its expected
version gets that failure (StaleVersion, ABORTED); one that did not (version 0) is
decided again on the newer user, a few times.

Publishing: every event appended is also recorded, in the append's transaction, in the
file's outbox for topic "user" (TOPIC), upcast like every read, for the service to
relay to the bus (services.common.messaging.relay_outbox on `database`): consumers get
these same messages, each in its user's stream, with the stored event's id and version.

Reads (`load`, `history`) are quick and never wait for a writer: call them on the
event loop. `execute` appends, which may wait for another instance's write lock: call
it through `asyncio.to_thread`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message
from shop.user.v1 import events_pb2

from mesh.storage import Database
from services.common.eventstore import (
    Aggregate,
    EventStore,
    NewEvent,
    StoredEvent,
    Upcasters,
    VersionConflict,
)
from services.user import domain
from services.user.domain import User, UserStatus
from services.user.errors import StaleVersion

__all__ = [
    "ATTEMPTS",
    "DEFAULT_SNAPSHOT_EVERY",
    "SCHEMA_VERSIONS",
    "SNAPSHOT_SCHEMA_VERSION",
    "SNAPSHOT_TYPE",
    "STREAM_PREFIX",
    "TOPIC",
    "Executed",
    "UserStore",
    "decode_event",
    "encode_event",
    "event_message",
    "registered_schema_1_to_2",
    "stream_of",
    "upcasters",
    "user_aggregate",
]

STREAM_PREFIX = "user-"
TOPIC = "user"
"""The topic the service publishes its events on."""
DEFAULT_SNAPSHOT_EVERY = 50
ATTEMPTS = 10
"""Times a command without an expected version is decided before a stream that keeps
moving under it is reported as ABORTED."""

_MESSAGES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.UserRegistered,
        events_pb2.EmailChanged,
        events_pb2.DisplayNameChanged,
        events_pb2.UserDeactivated,
    )
}

SCHEMA_VERSIONS: dict[str, int] = {
    events_pb2.UserRegistered.DESCRIPTOR.full_name: 2,  # 1: UserRegisteredSchema1
    events_pb2.EmailChanged.DESCRIPTOR.full_name: 1,
    events_pb2.DisplayNameChanged.DESCRIPTOR.full_name: 1,
    events_pb2.UserDeactivated.DESCRIPTOR.full_name: 1,
}
"""The schema version this service writes (and reads as) for each event type."""

SNAPSHOT_TYPE = events_pb2.UserSnapshot.DESCRIPTOR.full_name
SNAPSHOT_SCHEMA_VERSION = 1


def stream_of(user_id: str) -> str:
    """The stream that holds `user_id`'s events."""
    return f"{STREAM_PREFIX}{user_id}"


# -- events: domain <-> protobuf --------------------------------------------------------


def _message_of(event: domain.Event) -> Message:
    if isinstance(event, domain.UserRegistered):
        return events_pb2.UserRegistered(
            user_id=event.user_id,
            username=event.username,
            email=event.email,
            display_name=event.display_name,
        )
    if isinstance(event, domain.EmailChanged):
        return events_pb2.EmailChanged(email=event.email)
    if isinstance(event, domain.DisplayNameChanged):
        return events_pb2.DisplayNameChanged(display_name=event.display_name)
    return events_pb2.UserDeactivated(reason=event.reason)


def encode_event(event: domain.Event) -> NewEvent:
    """`event` as the store keeps it: its message's full name, bytes and schema."""
    message = _message_of(event)
    name = message.DESCRIPTOR.full_name
    return NewEvent(name, message.SerializeToString(deterministic=True), SCHEMA_VERSIONS[name])


def event_message(stored: StoredEvent) -> Message:
    """The protobuf message of a stored (and upcast) event.

    Raises:
        ValueError: the type is not a user event, or its schema is older than this
            service reads and no upcaster brought it up to date.
    """
    cls = _MESSAGES.get(stored.type)
    if cls is None:
        raise ValueError(f"event {stored.event_id} has an unknown type {stored.type!r}")
    if stored.schema_version < SCHEMA_VERSIONS[stored.type]:
        raise ValueError(
            f"event {stored.event_id} is {stored.type} of schema {stored.schema_version},"
            f" and nothing upcasts it to {SCHEMA_VERSIONS[stored.type]}"
        )
    return cls.FromString(stored.data)


def decode_event(stored: StoredEvent) -> domain.Event:
    """The domain event of a stored (and upcast) event; raises as `event_message`."""
    message = event_message(stored)
    if isinstance(message, events_pb2.UserRegistered):
        return domain.UserRegistered(
            message.user_id, message.username, message.email, message.display_name
        )
    if isinstance(message, events_pb2.EmailChanged):
        return domain.EmailChanged(message.email)
    if isinstance(message, events_pb2.DisplayNameChanged):
        return domain.DisplayNameChanged(message.display_name)
    assert isinstance(message, events_pb2.UserDeactivated)
    return domain.UserDeactivated(message.reason)


def registered_schema_1_to_2(data: bytes) -> tuple[bytes, int]:
    """A schema-1 UserRegistered as schema 2: its `name` is the display name, or its
    username when the name is empty (schema 1 allowed that, and showed the username)."""
    old = events_pb2.UserRegisteredSchema1.FromString(data)
    new = events_pb2.UserRegistered(
        user_id=old.user_id,
        username=old.username,
        email=old.email,
        display_name=old.name or old.username,
    )
    return new.SerializeToString(deterministic=True), 2


def upcasters() -> Upcasters:
    """What brings every older user event payload up to its current schema."""
    found = Upcasters()
    found.register(events_pb2.UserRegistered.DESCRIPTOR.full_name, 1, registered_schema_1_to_2)
    return found


# -- the aggregate: folding and snapshots ---------------------------------------------


def _fold(state: User | None, stored: StoredEvent) -> User | None:
    return domain.fold(state, decode_event(stored))


def _encode_snapshot(state: User | None) -> bytes:
    if state is None:
        raise ValueError("a user who is not registered has no snapshot")
    snapshot = events_pb2.UserSnapshot(
        user_id=state.user_id,
        username=state.username,
        email=state.email,
        display_name=state.display_name,
        deactivated=state.status is UserStatus.DEACTIVATED,
        deactivation_reason=state.deactivation_reason,
    )
    return snapshot.SerializeToString(deterministic=True)


def _decode_snapshot(data: bytes) -> User | None:
    snapshot = events_pb2.UserSnapshot.FromString(data)
    return User(
        user_id=snapshot.user_id,
        username=snapshot.username,
        email=snapshot.email,
        display_name=snapshot.display_name,
        status=UserStatus.DEACTIVATED if snapshot.deactivated else UserStatus.ACTIVE,
        deactivation_reason=snapshot.deactivation_reason,
    )


def user_aggregate(snapshot_every: int = DEFAULT_SNAPSHOT_EVERY) -> Aggregate[User | None]:
    """How a user is rebuilt from their stream, with a snapshot every `snapshot_every`
    events."""
    return Aggregate(
        initial=None,
        fold=_fold,
        state_type=SNAPSHOT_TYPE,
        encode=_encode_snapshot,
        decode=_decode_snapshot,
        schema_version=SNAPSHOT_SCHEMA_VERSION,
        snapshot_every=snapshot_every,
    )


@dataclass(frozen=True)
class Executed:
    """What a command left: the user and their version, and whether it appended events
    (then they wait in the outbox for the relay)."""

    user: User
    version: int
    appended: bool


class UserStore:
    """Users as event streams in one SQLite file shared by every instance. Open with
    `UserStore(path)`; the schema is created if missing.

    Args:
        snapshot_every: events between two snapshots of a user.
        clock: the current time in nanoseconds since the epoch (events' recorded_at).
    """

    def __init__(
        self,
        path: Path,
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self.aggregate = user_aggregate(snapshot_every)
        self.events = EventStore(path, upcasters=upcasters(), clock=clock, outbox_topic=TOPIC)
        """The event store underneath, for reads the methods here do not cover."""

    @property
    def database(self) -> Database:
        """The SQLite file, whose outbox holds the events to publish."""
        return self.events.database

    def close(self) -> None:
        self.events.close()

    def load(self, user_id: str) -> tuple[User | None, int]:
        """The user (None if not registered) and their version: from the latest
        snapshot on, their events replayed."""
        return self.events.load(stream_of(user_id), self.aggregate)

    def version(self, user_id: str) -> int:
        """The user's version: the number of their events, 0 if not registered."""
        return self.events.version(stream_of(user_id))

    def history(self, user_id: str, from_version: int = 1) -> list[StoredEvent]:
        """The user's events from `from_version` on, oldest first, upcast."""
        return self.events.read(stream_of(user_id), from_version)

    def execute(self, command: domain.Command) -> tuple[User, int]:
        """The user and version after `command`, as `run` carries it out."""
        done = self.run(command)
        return done.user, done.version

    def run(self, command: domain.Command) -> Executed:
        """Carry out `command` (see domain.decide) on the user as they are now: append
        its events, if any, and return the user and version after them, and whether it
        appended.

        A change with an expected version is refused if the user is at another one,
        unless it changes nothing (then it returns the user as they are). Without one
        (0, and every RegisterUser), a concurrent append makes it decide again on the
        newer user, up to ATTEMPTS times.

        Raises:
            StaleVersion: the user is not at the command's expected version, or moved
                on between the load and the append (or, without an expected version,
                kept moving for ATTEMPTS tries).
            AlreadyExists, NotFound, FailedPrecondition: as domain.decide.
        """
        stream = stream_of(command.user_id)
        expected = 0 if isinstance(command, domain.RegisterUser) else command.expected_version
        attempt = 1
        while True:
            state, version = self.load(command.user_id)
            new = domain.decide(state, command)
            if not new:
                assert state is not None, "decide appends to a user who is not registered"
                return Executed(state, version, appended=False)
            if expected and expected != version:
                raise StaleVersion(command.user_id, stream, expected, version)
            try:
                after, version = self.events.append_and_snapshot(
                    stream, self.aggregate, state, version, [encode_event(e) for e in new]
                )
            except VersionConflict as conflict:
                if expected or attempt >= ATTEMPTS:
                    raise StaleVersion(
                        command.user_id, stream, conflict.expected_version, conflict.actual_version
                    ) from None
                attempt += 1
                continue
            assert after is not None, "events that decide returned leave a user"
            return Executed(after, version, appended=True)
