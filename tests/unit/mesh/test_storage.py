"""mesh.storage.Database on a real SQLite file: schema, transactions, sharing, locking."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mesh.storage import BUSY_TIMEOUT, Database

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    """
    CREATE TABLE IF NOT EXISTS tags (
        item_id INTEGER NOT NULL REFERENCES items (id),
        tag     TEXT NOT NULL
    )
    """,
)

Open = Callable[..., Database]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def open_db(path: Path) -> Iterator[Open]:
    """Opens Databases on `path` (keyword arguments go to Database) and closes them after."""
    opened: list[Database] = []

    def open_(**options: float) -> Database:
        database = Database(path, SCHEMA, **options)
        opened.append(database)
        return database

    yield open_
    for database in opened:
        database.close()


def names(database: Database) -> list[str]:
    with database.read() as db:
        return [name for (name,) in db.execute("SELECT name FROM items ORDER BY id")]


def outside(path: Path, sql: str) -> list[tuple[object, ...]]:
    """What a connection of another process would see."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_schema_is_created(path: Path, open_db: Open) -> None:
    open_db()
    tables = outside(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert tables == [("items",), ("tags",)]


def test_reopening_keeps_the_rows(path: Path, open_db: Open) -> None:
    with open_db().write() as db:
        db.execute("INSERT INTO items (name) VALUES ('a')")
    assert names(open_db()) == ["a"]


def test_connection_settings(path: Path, open_db: Open) -> None:
    database = open_db()
    assert BUSY_TIMEOUT == 5.0
    assert outside(path, "PRAGMA journal_mode") == [("wal",)]
    with database.read() as db:
        assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert db.execute("PRAGMA busy_timeout").fetchone() == (5000,)
    with pytest.raises(sqlite3.IntegrityError), database.write() as db:
        db.execute("INSERT INTO tags (item_id, tag) VALUES (99, 'orphan')")


def test_write_commits(path: Path, open_db: Open) -> None:
    database = open_db()
    with database.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('a')")
        db.execute("INSERT INTO items (name) VALUES ('b')")
    assert outside(path, "SELECT name FROM items ORDER BY id") == [("a",), ("b",)]
    assert names(database) == ["a", "b"]


def test_an_exception_in_write_rolls_it_back(open_db: Open) -> None:
    database = open_db()

    def break_a_rule() -> None:
        with database.write() as db:
            db.execute("INSERT INTO items (name) VALUES ('a')")
            raise ValueError("rule broken")

    with pytest.raises(ValueError, match="rule broken"):
        break_a_rule()
    assert names(database) == []
    with database.write() as db:  # no transaction was left open
        db.execute("INSERT INTO items (name) VALUES ('b')")
    assert names(database) == ["b"]


def test_two_databases_on_one_file_see_each_others_writes(open_db: Open) -> None:
    first, second = open_db(), open_db()
    with first.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('from first')")
    with second.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('from second')")
    assert names(first) == names(second) == ["from first", "from second"]


def test_the_data_version_moves_with_every_commit_of_any_connection(open_db: Open) -> None:
    first, second = open_db(), open_db()
    before = first.data_version()
    names(first)
    assert first.data_version() == before  # reading changes nothing
    with first.write() as db:  # its own writer is another connection than its reader
        db.execute("INSERT INTO items (name) VALUES ('own')")
    after_own = first.data_version()
    with second.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('other')")
    assert len({before, after_own, first.data_version()}) == 3


def test_a_read_sees_no_uncommitted_write_and_does_not_wait_for_it(open_db: Open) -> None:
    first, second = open_db(), open_db(busy_timeout=0.1)
    with first.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('pending')")
        assert names(second) == []
    assert names(second) == ["pending"]


def test_a_second_write_waits_for_the_first(open_db: Open) -> None:
    first, second = open_db(), open_db()
    started = threading.Event()
    seen: list[list[str]] = []
    times: dict[str, float] = {}

    def write_second() -> None:
        started.set()
        with second.write() as db:
            times["second began"] = time.monotonic()
            seen.append([name for (name,) in db.execute("SELECT name FROM items")])
            db.execute("INSERT INTO items (name) VALUES ('second')")

    thread = threading.Thread(target=write_second)
    with first.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('first')")
        thread.start()
        assert started.wait(10)
        time.sleep(0.3)
        times["first ends"] = time.monotonic()
    thread.join(10)

    assert not thread.is_alive()
    assert times["second began"] >= times["first ends"]
    assert seen == [["first"]]  # it read only after the first committed
    assert names(first) == ["first", "second"]


def test_a_write_waiting_longer_than_its_busy_timeout_fails(open_db: Open) -> None:
    first, second = open_db(), open_db(busy_timeout=0.1)
    errors: list[BaseException] = []

    def write_second() -> None:
        try:
            with second.write() as db:
                db.execute("INSERT INTO items (name) VALUES ('second')")
        except BaseException as error:
            errors.append(error)

    with first.write() as db:
        db.execute("INSERT INTO items (name) VALUES ('first')")
        thread = threading.Thread(target=write_second)
        thread.start()
        thread.join(10)  # the first holds the write lock all along

    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], sqlite3.OperationalError)
    assert str(errors[0]) == "database is locked"
    with second.write() as db:  # the failed attempt left no transaction behind
        db.execute("INSERT INTO items (name) VALUES ('second')")
    assert names(first) == ["first", "second"]


def test_threads_sharing_one_database_take_turns(open_db: Open) -> None:
    database = open_db()
    with database.write() as db:
        db.execute("INSERT INTO items (id, name) VALUES (1, '0')")

    def increment() -> None:
        for _ in range(25):
            with database.write() as db:
                (value,) = db.execute("SELECT name FROM items WHERE id = 1").fetchone()
                db.execute("UPDATE items SET name = ? WHERE id = 1", (str(int(value) + 1),))

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert names(database) == ["100"]


def test_close(path: Path) -> None:
    database = Database(path, SCHEMA)
    database.close()
    with pytest.raises(sqlite3.ProgrammingError), database.read():
        pass
    with pytest.raises(sqlite3.ProgrammingError), database.write():
        pass


def test_instances_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # The switch of a new file to WAL can fail at once with SQLITE_BUSY when another
    # connection is switching too (SQLite does not wait there); Database must wait.
    errors: list[BaseException] = []
    for attempt in range(20):
        path = tmp_path / f"new-{attempt}.db"
        barrier = threading.Barrier(3)

        def open_and_close(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                Database(path, SCHEMA).close()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=open_and_close) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
