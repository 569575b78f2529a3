"""services.common.eventstore on real SQLite files: optimistic concurrency across threads
and processes, reads, snapshots, upcasting."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from mesh.problems import Aborted
from services.common import eventstore
from services.common.eventstore import (
    Aggregate,
    EventStore,
    NewEvent,
    StoredEvent,
    Upcasters,
    VersionConflict,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def store(path: Path) -> Iterator[EventStore]:
    store = EventStore(path)
    yield store
    store.close()


def events(*names: str, type: str = "test.Named") -> list[NewEvent]:
    return [NewEvent(type, name.encode()) for name in names]


def names(stored: list[StoredEvent]) -> list[str]:
    return [event.data.decode() for event in stored]


def test_append_and_read_round_trip(path: Path) -> None:
    store = EventStore(path, clock=lambda: 1234)
    appended = store.append("user-1", 0, [NewEvent("test.Created", b"\x00\x01", 3)])
    assert store.read("user-1") == appended
    [event] = appended
    assert (event.stream, event.version, event.type) == ("user-1", 1, "test.Created")
    assert (event.schema_version, event.data, event.recorded_at) == (3, b"\x00\x01", 1234)
    store.close()


def test_versions_count_per_stream_and_positions_across_streams(store: EventStore) -> None:
    first = store.append("a", 0, events("a1", "a2"))
    second = store.append("b", 0, events("b1"))
    third = store.append("a", 2, events("a3"))
    assert [e.version for e in first + second + third] == [1, 2, 1, 3]
    positions = [e.position for e in first + second + third]
    assert positions == sorted(positions)
    assert len(set(positions)) == 4
    assert len({e.event_id for e in first + second + third}) == 4
    assert (store.version("a"), store.version("b"), store.version("never")) == (3, 1, 0)


def test_conflict_raises_aborted_and_writes_nothing(store: EventStore) -> None:
    store.append("a", 0, events("a1", "a2"))
    for stale in (0, 1, 3):
        with pytest.raises(Aborted) as error:
            store.append("a", stale, events("late1", "late2"))
        assert isinstance(error.value, VersionConflict)
        assert (error.value.expected_version, error.value.actual_version) == (stale, 2)
        assert "'a'" in error.value.message
    assert names(store.read("a")) == ["a1", "a2"]
    assert store.read_all() == store.read("a")


def test_unique_stream_version_holds_when_the_check_is_skipped(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append("a", 0, events("a1", "a2"))
    # A writer whose check always agrees: only the UNIQUE constraint stands in its way.
    monkeypatch.setattr(eventstore, "_stream_version", lambda db, stream: 1)
    with pytest.raises(VersionConflict):
        store.append("a", 1, events("new2", "new3"))
    monkeypatch.undo()
    assert names(store.read("a")) == ["a1", "a2"]
    assert len(store.read_all()) == 2


@pytest.mark.parametrize(
    ("expected", "new"),
    [(-1, events("x")), (0, [])],
    ids=["negative-version", "no-events"],
)
def test_bad_arguments_are_value_errors(
    store: EventStore, expected: int, new: list[NewEvent]
) -> None:
    with pytest.raises(ValueError, match=r"expected_version|at least one"):
        store.append("a", expected, new)
    assert store.read_all() == []


@pytest.mark.parametrize("store_per_thread", [False, True], ids=["shared", "one-per-thread"])
def test_concurrent_appends_from_threads_exactly_one_wins(
    path: Path, store: EventStore, store_per_thread: bool
) -> None:
    store.append("a", 0, events("base"))
    contenders = 8
    barrier = threading.Barrier(contenders)
    outcomes: dict[int, str] = {}

    def contend(n: int) -> None:
        mine = EventStore(path) if store_per_thread else store
        barrier.wait()
        try:
            mine.append("a", 1, events(f"t{n}-1", f"t{n}-2"))
            outcomes[n] = "won"
        except Aborted:
            outcomes[n] = "aborted"
        finally:
            if mine is not store:
                mine.close()

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [n for n, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == contenders
    assert len(winners) == 1
    (winner,) = winners
    assert names(store.read("a")) == ["base", f"t{winner}-1", f"t{winner}-2"]
    assert [e.version for e in store.read("a")] == [1, 2, 3]


_CONTENDER = """
import sys
from pathlib import Path
from mesh.problems import Aborted
from services.common.eventstore import EventStore, NewEvent

store = EventStore(Path(sys.argv[1]))
tag = sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
try:
    store.append("a", 1, [NewEvent("test.Named", f"{tag}-{i}".encode()) for i in (1, 2, 3)])
    print("won", flush=True)
except Aborted:
    print("aborted", flush=True)
store.close()
"""


def test_concurrent_appends_from_processes_exactly_one_wins(path: Path, store: EventStore) -> None:
    store.append("a", 0, events("base"))
    tags = ["p0", "p1", "p2"]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CONTENDER, str(path), tag],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in tags
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
        # Every contender has the file open before any is told to append, and all are
        # told before any is waited for.
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert [child.returncode for child in children] == [0] * len(tags)
    outcomes = [out.strip() for out, _ in results]
    assert sorted(outcomes) == ["aborted"] * (len(tags) - 1) + ["won"]
    winner = tags[outcomes.index("won")]
    assert names(store.read("a")) == ["base", f"{winner}-1", f"{winner}-2", f"{winner}-3"]


def test_writers_that_retry_after_conflicts_all_get_in(path: Path, store: EventStore) -> None:
    def increment(n: int) -> None:
        mine = EventStore(path)
        for i in range(10):
            while True:
                try:
                    mine.append("counter", mine.version("counter"), events(f"w{n}-{i}"))
                    break
                except VersionConflict:
                    continue
        mine.close()

    threads = [threading.Thread(target=increment, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stored = store.read("counter")
    assert [e.version for e in stored] == list(range(1, 41))
    assert sorted(names(stored)) == sorted(f"w{n}-{i}" for n in range(4) for i in range(10))
    assert [e.position for e in stored] == sorted(e.position for e in stored)


def test_read_from_a_version(store: EventStore) -> None:
    store.append("a", 0, events("a1", "a2", "a3", "a4"))
    assert names(store.read("a", from_version=3)) == ["a3", "a4"]
    assert store.read("a", from_version=5) == []
    with pytest.raises(ValueError, match="from_version"):
        store.read("a", from_version=0)


def test_read_all_after_a_position_across_streams_in_order(store: EventStore) -> None:
    store.append("a", 0, events("a1"))
    store.append("b", 0, events("b1", "b2"))
    store.append("a", 1, events("a2"))
    store.append("c", 0, events("c1"))
    everything = store.read_all()
    assert names(everything) == ["a1", "b1", "b2", "a2", "c1"]
    assert names(store.read_all(after_position=everything[1].position)) == ["b2", "a2", "c1"]
    assert names(store.read_all(after_position=everything[0].position, limit=2)) == ["b1", "b2"]
    assert store.read_all(after_position=everything[-1].position) == []


def list_aggregate(seen: list[int], *, schema_version: int = 1) -> Aggregate[tuple[str, ...]]:
    """A state of every name appended, which records the versions it folds in `seen`."""

    def fold(state: tuple[str, ...], event: StoredEvent) -> tuple[str, ...]:
        seen.append(event.version)
        return (*state, event.data.decode())

    return Aggregate(
        initial=(),
        fold=fold,
        state_type="test.Names",
        encode=lambda state: json.dumps(state).encode(),
        decode=lambda data: tuple(json.loads(data)),
        schema_version=schema_version,
        snapshot_every=3,
    )


def test_snapshots_every_n_events_and_load_equals_full_replay(store: EventStore) -> None:
    seen: list[int] = []
    aggregate = list_aggregate(seen)
    state, version = store.load("a", aggregate)
    snapshot_versions = []
    for batch in range(5):
        new = events(f"e{batch}-1", f"e{batch}-2")
        state, version = store.append_and_snapshot("a", aggregate, state, version, new)
        snapshot = store.latest_snapshot("a")
        snapshot_versions.append(snapshot.version if snapshot else None)
    # Versions 2, 4, 6, 8, 10: a snapshot after each batch that passed 3, 6 or 9.
    assert snapshot_versions == [None, 4, 6, 6, 10]
    store.append("a", 10, events("tail-1", "tail-2"))

    seen.clear()
    loaded = store.load("a", aggregate)
    assert seen == [11, 12]  # only the events after the snapshot at 10 were folded
    replayed: tuple[str, ...] = ()
    for event in store.read("a"):
        replayed = aggregate.fold(replayed, event)
    assert loaded == (replayed, 12)
    assert loaded[0][-3:] == ("e4-2", "tail-1", "tail-2")


def test_a_snapshot_of_another_state_schema_is_ignored(store: EventStore) -> None:
    store.append("a", 0, events("a1", "a2", "a3"))
    store.save_snapshot("a", 2, "test.Names", 1, json.dumps(["stale"]).encode())
    seen: list[int] = []
    assert store.load("a", list_aggregate(seen, schema_version=2)) == (("a1", "a2", "a3"), 3)
    assert seen == [1, 2, 3]
    assert store.load("a", list_aggregate([], schema_version=1)) == (("stale", "a3"), 3)


def test_save_snapshot_keeps_the_latest_and_needs_the_version(store: EventStore) -> None:
    store.append("a", 0, events("a1", "a2", "a3"))
    store.save_snapshot("a", 3, "test.Names", 1, b"at 3")
    store.save_snapshot("a", 2, "test.Names", 1, b"at 2")  # a slower writer, older state
    snapshot = store.latest_snapshot("a")
    assert snapshot is not None
    assert (snapshot.version, snapshot.data) == (3, b"at 3")
    with pytest.raises(ValueError, match="no version 4"):
        store.save_snapshot("a", 4, "test.Names", 1, b"the future")
    assert store.latest_snapshot("b") is None


# Two schemas of one event: v1 {"name": "Ada Lovelace"}, v2 {"given": "Ada", "family": ...}.
RENAMED = "test.UserRenamed"


def struct_bytes(**fields: str) -> bytes:
    message = struct_pb2.Struct()
    message.update(fields)
    return message.SerializeToString(deterministic=True)


def struct_fields(data: bytes) -> dict[str, object]:
    message = struct_pb2.Struct()
    message.ParseFromString(data)
    return dict(message.items())


def renamed_v1_to_v2(data: bytes) -> tuple[bytes, int]:
    given, _, family = str(struct_fields(data)["name"]).partition(" ")
    return struct_bytes(given=given, family=family), 2


def test_old_rows_are_upcast_on_read_and_stay_as_stored(path: Path) -> None:
    old = EventStore(path)  # the service before schema 2
    old.append("u", 0, [NewEvent(RENAMED, struct_bytes(name="Ada Lovelace"), 1)])
    old.append("u", 1, [NewEvent("test.Other", b"untouched", 1)])
    old.close()
    upcasters = Upcasters()
    upcasters.register(RENAMED, 1, renamed_v1_to_v2)
    new = EventStore(path, upcasters=upcasters)
    new.append("u", 2, [NewEvent(RENAMED, struct_bytes(given="Grace", family="Hopper"), 2)])

    renamed, other, current = new.read("u")
    assert renamed.schema_version == 2
    assert struct_fields(renamed.data) == {"given": "Ada", "family": "Lovelace"}
    assert (other.schema_version, other.data) == (1, b"untouched")
    assert struct_fields(current.data) == {"given": "Grace", "family": "Hopper"}
    assert new.read_all()[0] == renamed
    new.close()

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT schema_version, data FROM events ORDER BY position").fetchall()
    assert rows[0] == (1, struct_bytes(name="Ada Lovelace"))
    reopened = EventStore(path)  # no upcasters: the row as stored
    assert reopened.read("u")[0].schema_version == 1
    reopened.close()


def test_upcasters_chain_and_must_move_forward(store: EventStore) -> None:
    store.append("u", 0, [NewEvent(RENAMED, struct_bytes(name="Ada Lovelace"), 1)])
    upcasters = Upcasters()
    upcasters.register(RENAMED, 1, renamed_v1_to_v2)
    upcasters.register(RENAMED, 2, lambda data: (data + b"!", 3))
    [event] = store.read("u")
    upcast = upcasters.upcast(event)
    assert upcast.schema_version == 3
    assert upcast.data == struct_bytes(given="Ada", family="Lovelace") + b"!"
    with pytest.raises(ValueError, match="exists"):
        upcasters.register(RENAMED, 2, renamed_v1_to_v2)
    backwards = Upcasters()
    backwards.register(RENAMED, 1, lambda data: (data, 1))
    with pytest.raises(ValueError, match="returned 1"):
        backwards.upcast(event)


def test_close_and_reopen_keeps_everything(path: Path) -> None:
    store = EventStore(path)
    first = store.append("a", 0, events("a1", "a2"))
    store.append("b", 0, events("b1"))
    store.save_snapshot("a", 2, "test.Names", 1, b"snap")
    everything = store.read_all()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.read("a")

    reopened = EventStore(path)
    assert reopened.read_all() == everything
    assert reopened.read("a") == first
    assert reopened.version("a") == 2
    snapshot = reopened.latest_snapshot("a")
    assert snapshot is not None
    assert (snapshot.version, snapshot.data) == (2, b"snap")
    later = reopened.append("a", 2, events("a3"))
    assert later[0].position > everything[-1].position
    reopened.close()
