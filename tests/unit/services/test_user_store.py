"""services.user.store on real SQLite files: commands through the aggregate, snapshots,
the schema-1 upcast, and optimistic concurrency between stores sharing a file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.rpc import error_details_pb2
from shop.user.v1 import events_pb2

from mesh.config import ServiceSpec, validate_settings
from mesh.errors import ConfigError
from mesh.problems import Aborted, AlreadyExists, NotFound
from services.common.eventstore import EventStore, NewEvent
from services.user import domain
from services.user.domain import (
    ChangeDisplayName,
    ChangeEmail,
    DeactivateUser,
    RegisterUser,
    User,
    UserStatus,
)
from services.user.errors import VERSION_CONFLICT, StaleVersion
from services.user.settings import UserSettings
from services.user.store import (
    ATTEMPTS,
    SNAPSHOT_SCHEMA_VERSION,
    SNAPSHOT_TYPE,
    UserStore,
    decode_event,
    encode_event,
    stream_of,
)

ADA = "usr-00000000000000ad"
REGISTERED = "shop.user.v1.UserRegistered"
REGISTER = RegisterUser(ADA, "ada", "ada@example.com", "Ada")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "user.db"


@pytest.fixture
def store(path: Path) -> Iterator[UserStore]:
    store = UserStore(path, snapshot_every=3)
    yield store
    store.close()


def full_replay(store: UserStore, user_id: str) -> tuple[User | None, int]:
    """The user from every event of their stream, no snapshot."""
    events = store.history(user_id)
    return domain.replay([decode_event(e) for e in events]), len(events)


def test_commands_append_events_and_load_replays_them(path: Path) -> None:
    store = UserStore(path, clock=lambda: 1_700_000_000_000_000_001)
    assert store.load(ADA) == (None, 0)
    assert store.execute(REGISTER) == (User(ADA, "ada", "ada@example.com", "Ada"), 1)
    store.execute(ChangeEmail(ADA, "lovelace@example.org", 1))
    store.execute(ChangeDisplayName(ADA, "Countess", 0))
    after = store.execute(DeactivateUser(ADA, "left", 3))

    expected = User(ADA, "ada", "lovelace@example.org", "Countess", UserStatus.DEACTIVATED, "left")
    assert after == (expected, 4)
    assert store.load(ADA) == (expected, 4)
    assert store.version(ADA) == 4
    history = store.history(ADA)
    assert [e.type for e in history] == [
        REGISTERED,
        "shop.user.v1.EmailChanged",
        "shop.user.v1.DisplayNameChanged",
        "shop.user.v1.UserDeactivated",
    ]
    assert {e.stream for e in history} == {stream_of(ADA)} == {f"user-{ADA}"}
    assert [e.schema_version for e in history] == [2, 1, 1, 1]
    assert {e.recorded_at for e in history} == {1_700_000_000_000_000_001}
    store.close()


def test_a_command_that_changes_nothing_appends_nothing(store: UserStore) -> None:
    store.execute(REGISTER)
    assert store.execute(REGISTER)[1] == 1
    assert store.execute(ChangeEmail(ADA, "ada@example.com", 0))[1] == 1
    store.execute(DeactivateUser(ADA, "first", 0))
    assert store.execute(DeactivateUser(ADA, "second", 0))[0].deactivation_reason == "first"
    assert store.version(ADA) == 2


def test_domain_refusals_come_through(store: UserStore) -> None:
    with pytest.raises(NotFound):
        store.execute(ChangeEmail(ADA, "x@example.com", 0))
    store.execute(REGISTER)
    with pytest.raises(AlreadyExists):
        store.execute(RegisterUser(ADA, "ada", "other@example.com", "Ada"))
    assert store.version(ADA) == 1


def test_snapshots_every_n_events_and_load_equals_full_replay(store: UserStore) -> None:
    events = EventStore(store.path)
    store.execute(REGISTER)
    snapshots = []
    for n in range(2, 12):  # versions 2 to 11
        if n % 2:
            store.execute(ChangeEmail(ADA, f"ada{n}@example.com", n - 1))
        else:
            store.execute(ChangeDisplayName(ADA, f"Ada {n}", 0))
        snapshot = events.latest_snapshot(stream_of(ADA))
        snapshots.append(snapshot.version if snapshot else None)

    assert snapshots == [None, 3, 3, 3, 6, 6, 6, 9, 9, 9]
    snapshot = events.latest_snapshot(stream_of(ADA))
    assert snapshot is not None
    assert (snapshot.state_type, snapshot.schema_version) == (
        SNAPSHOT_TYPE,
        SNAPSHOT_SCHEMA_VERSION,
    )
    state = events_pb2.UserSnapshot.FromString(snapshot.data)
    assert (state.email, state.display_name) == ("ada9@example.com", "Ada 8")

    loaded = store.load(ADA)
    assert loaded == full_replay(store, ADA)
    assert loaded == (User(ADA, "ada", "ada11@example.com", "Ada 10"), 11)
    # A fresh store on the same file (another instance) loads the same user.
    other = UserStore(store.path, snapshot_every=3)
    assert other.load(ADA) == loaded
    other.close()
    events.close()


def test_load_starts_from_the_snapshot_and_ignores_another_schema(store: UserStore) -> None:
    events = EventStore(store.path)
    store.execute(REGISTER)
    store.execute(ChangeEmail(ADA, "ada2@example.com", 0))
    store.execute(ChangeEmail(ADA, "ada3@example.com", 0))
    store.execute(ChangeEmail(ADA, "ada4@example.com", 0))  # snapshot at 3
    # A snapshot that no replay could give shows that only the events after it fold.
    marked = events_pb2.UserSnapshot(
        user_id=ADA, username="ada", email="x@example.com", display_name="From the snapshot"
    ).SerializeToString()
    events.save_snapshot(stream_of(ADA), 3, SNAPSHOT_TYPE, SNAPSHOT_SCHEMA_VERSION, marked)
    assert store.load(ADA) == (User(ADA, "ada", "ada4@example.com", "From the snapshot"), 4)
    # One of another schema is ignored: the stream is replayed from the start.
    events.save_snapshot(stream_of(ADA), 4, SNAPSHOT_TYPE, SNAPSHOT_SCHEMA_VERSION + 1, marked)
    assert store.load(ADA) == full_replay(store, ADA)
    events.close()


def test_the_default_snapshot_interval_is_50(path: Path) -> None:
    store = UserStore(path)
    assert store.aggregate.snapshot_every == 50
    store.close()
    spec = ServiceSpec("user", "services.user")
    assert validate_settings(spec, UserSettings).snapshot_every == 50


@pytest.mark.parametrize("every", [0, -1, "3"])
def test_a_bad_snapshot_interval_is_named(every: object) -> None:
    spec = ServiceSpec("user", "services.user", settings={"snapshot_every": every})
    with pytest.raises(ConfigError) as caught:
        validate_settings(spec, UserSettings)
    assert caught.value.key == "services.user.settings.snapshot_every"


# -- the schema-1 upcast -----------------------------------------------------------------


def schema_1_registration(name: str, user_id: str = ADA) -> NewEvent:
    """A UserRegistered as the service wrote it before schema 2: a `name`, field 4."""
    old = events_pb2.UserRegisteredSchema1(
        user_id=user_id, username="ada", email="ada@example.com", name=name
    )
    return NewEvent(REGISTERED, old.SerializeToString(), 1)


def test_schema_1_rows_are_read_as_schema_2_without_a_migration(path: Path) -> None:
    old = EventStore(path)  # the service before schema 2: no upcasters
    old.append(stream_of(ADA), 0, [schema_1_registration("Ada Lovelace")])
    old.append(stream_of(ADA), 1, [encode_event(domain.EmailChanged("lovelace@example.org"))])
    old.close()

    store = UserStore(path)
    assert store.load(ADA) == (User(ADA, "ada", "lovelace@example.org", "Ada Lovelace"), 2)
    registered = store.history(ADA)[0]
    assert registered.schema_version == 2
    message = events_pb2.UserRegistered.FromString(registered.data)
    assert (message.display_name, message.username) == ("Ada Lovelace", "ada")
    # Changes go on on top of the old rows.
    assert store.execute(ChangeDisplayName(ADA, "Countess", 2))[1] == 3
    store.close()

    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT schema_version, data FROM events WHERE type = ? ORDER BY version",
            (REGISTERED,),
        ).fetchall()
    db.close()
    assert rows == [(1, schema_1_registration("Ada Lovelace").data)]  # as stored, untouched


def test_a_schema_1_user_without_a_name_is_shown_by_username(path: Path) -> None:
    old = EventStore(path)
    old.append(stream_of(ADA), 0, [schema_1_registration("")])
    old.close()
    store = UserStore(path)
    user, _ = store.load(ADA)
    assert user is not None
    assert user.display_name == "ada"
    store.close()


def test_an_unknown_event_type_fails_the_load(store: UserStore) -> None:
    store.events.append(stream_of(ADA), 0, [NewEvent("shop.user.v1.Unknown", b"")])
    with pytest.raises(ValueError, match="unknown type"):
        store.load(ADA)


# -- optimistic concurrency --------------------------------------------------------------


def test_a_stale_expected_version_is_aborted_with_the_current_version(store: UserStore) -> None:
    store.execute(REGISTER)
    store.execute(ChangeEmail(ADA, "second@example.com", 1))
    with pytest.raises(Aborted) as caught:
        store.execute(ChangeEmail(ADA, "third@example.com", 1))
    error = caught.value
    assert isinstance(error, StaleVersion)
    assert (error.expected_version, error.current_version) == (1, 2)
    assert "version 2" in error.message
    [detail] = error.to_status().details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.reason == VERSION_CONFLICT
    assert dict(info.metadata) == {
        "user_id": ADA,
        "expected_version": "1",
        "current_version": "2",
    }
    # A future version is as stale as a past one; a change to what is there is not.
    with pytest.raises(StaleVersion):
        store.execute(ChangeEmail(ADA, "third@example.com", 7))
    assert store.execute(ChangeEmail(ADA, "second@example.com", 1))[1] == 2
    assert store.load(ADA)[0] == User(ADA, "ada", "second@example.com", "Ada")


def contend(path: Path, commands: list[domain.Command]) -> list[str]:
    """Run each command in its own thread, on its own store (as separate instances do),
    all let go at once; what each got: its version, or the error's class name."""
    barrier = threading.Barrier(len(commands))
    outcomes: list[str] = [""] * len(commands)

    def run(index: int, command: domain.Command) -> None:
        mine = UserStore(path, snapshot_every=3)
        barrier.wait()
        try:
            outcomes[index] = f"v{mine.execute(command)[1]}"
        except (Aborted, AlreadyExists) as error:
            outcomes[index] = type(error).__name__
        finally:
            mine.close()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(commands)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


@pytest.mark.parametrize("attempt", range(5))
def test_concurrent_changes_with_the_same_expected_version_one_wins(
    path: Path, store: UserStore, attempt: int
) -> None:
    store.execute(REGISTER)
    outcomes = contend(
        path,
        [ChangeEmail(ADA, "left@example.com", 1), ChangeEmail(ADA, "right@example.com", 1)],
    )
    assert sorted(outcomes) == ["StaleVersion", "v2"]
    winner = ["left@example.com", "right@example.com"][outcomes.index("v2")]
    assert store.load(ADA) == (User(ADA, "ada", winner, "Ada"), 2)


def test_concurrent_changes_without_an_expected_version_all_get_in(
    path: Path, store: UserStore
) -> None:
    store.execute(REGISTER)
    commands: list[domain.Command] = [ChangeDisplayName(ADA, f"Writer {n}", 0) for n in range(4)]
    outcomes = contend(path, commands)
    assert sorted(outcomes) == ["v2", "v3", "v4", "v5"]
    last = store.history(ADA)[-1]
    user, version = store.load(ADA)
    assert version == 5
    assert user == full_replay(store, ADA)[0]
    assert user is not None
    assert decode_event(last) == domain.DisplayNameChanged(user.display_name)


@pytest.mark.parametrize(
    ("second", "outcomes"),
    [
        (REGISTER, ["v1", "v1"]),
        (RegisterUser(ADA, "ada", "ada@other.example", "Ada"), ["AlreadyExists", "v1"]),
    ],
    ids=["same", "other-details"],
)
def test_concurrent_registrations_make_one_user(
    path: Path, store: UserStore, second: RegisterUser, outcomes: list[str]
) -> None:
    assert sorted(contend(path, [REGISTER, second])) == outcomes
    assert store.version(ADA) == 1


def test_a_stream_that_keeps_moving_aborts_a_versionless_change_at_last(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.execute(REGISTER)
    other = UserStore(store.path)
    real_load: Callable[[str], tuple[User | None, int]] = store.load
    loads = 0

    def load_then_someone_writes(user_id: str) -> tuple[User | None, int]:
        nonlocal loads
        loads += 1
        loaded = real_load(user_id)
        other.execute(ChangeDisplayName(ADA, f"Other {loads}", 0))
        return loaded

    monkeypatch.setattr(store, "load", load_then_someone_writes)
    with pytest.raises(StaleVersion):
        store.execute(ChangeEmail(ADA, "mine@example.com", 0))
    assert loads == ATTEMPTS
    assert store.version(ADA) == 1 + ATTEMPTS  # only the other writer's changes
    other.close()
