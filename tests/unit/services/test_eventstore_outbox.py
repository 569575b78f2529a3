"""services.common.eventstore with an outbox topic, on real SQLite files: what an append
stores is recorded for publishing in the same transaction, and what it refuses is not."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.eventstore import EventStore, NewEvent, Upcasters, VersionConflict

RECORDED_AT = 1_700_000_000_123_456_789  # nanoseconds


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(tmp_path / "events.db", outbox_topic="user", clock=lambda: RECORDED_AT)
    yield store
    store.close()


def outbox(store: EventStore) -> list[tuple[object, ...]]:
    return store.database.query(
        "SELECT event_id, topic, stream, version, type, data, occurred_at, published_at"
        " FROM outbox ORDER BY position"
    )


def test_an_append_records_each_event_in_the_outbox(store: EventStore) -> None:
    first = store.append("user-1", 0, [NewEvent("test.Registered", b"r")])
    second = store.append(
        "user-1", 1, [NewEvent("test.Renamed", b"a"), NewEvent("test.Renamed", b"b")]
    )
    assert outbox(store) == [
        (e.event_id, "user", "user-1", e.version, e.type, e.data, RECORDED_AT / 1e9, None)
        for e in first + second
    ]


def test_a_version_conflict_records_nothing(store: EventStore) -> None:
    store.append("user-1", 0, [NewEvent("test.Registered", b"r")])
    with pytest.raises(VersionConflict):
        store.append("user-1", 0, [NewEvent("test.Registered", b"again")])
    assert [row[5] for row in outbox(store)] == [b"r"]


def test_the_outbox_commits_and_rolls_back_with_the_events(
    store: EventStore, tmp_path: Path
) -> None:
    # A stream name the bus refuses fails the outbox record after the events' insert:
    # the whole append rolls back.
    with pytest.raises(ValueError, match="printable ASCII"):
        store.append("user-\n", 0, [NewEvent("test.Registered", b"r")])
    assert store.version("user-\n") == 0
    assert outbox(store) == []
    # What commits is visible to another connection (another instance) at once.
    store.append("user-2", 0, [NewEvent("test.Registered", b"r")])
    other = sqlite3.connect(tmp_path / "events.db")
    try:
        assert other.execute("SELECT stream FROM outbox").fetchall() == [("user-2",)]
    finally:
        other.close()


def test_the_outbox_gets_events_upcast(tmp_path: Path) -> None:
    upcasters = Upcasters()
    upcasters.register("test.Registered", 1, lambda data: (data.upper(), 2))
    store = EventStore(tmp_path / "events.db", upcasters=upcasters, outbox_topic="user")
    try:
        [stored] = store.append("user-1", 0, [NewEvent("test.Registered", b"old", 1)])
        assert (stored.data, stored.schema_version) == (b"OLD", 2)
        assert [row[5] for row in outbox(store)] == [b"OLD"]
    finally:
        store.close()


def test_without_a_topic_there_is_no_outbox(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "events.db")
    try:
        store.append("user-1", 0, [NewEvent("test.Registered", b"r")])
        tables = {row[0] for row in store.database.query("SELECT name FROM sqlite_master")}
        assert "events" in tables
        assert "outbox" not in tables
    finally:
        store.close()
