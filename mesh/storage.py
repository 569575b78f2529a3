"""The SQLite plumbing every service store needs, written once.

Each service keeps its state in one SQLite file, and every instance of the service (a
separate process) opens that same file. Sharing a file safely between processes takes
the same settings everywhere: WAL mode, a busy timeout, and short explicit
transactions. Getting one of them wrong in one store is a bug that only shows under
load, so the stores hold a `Database` instead of repeating the setup.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

__all__ = ["BUSY_TIMEOUT", "Database"]

BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another process's write lock before failing."""


class Database:
    """One SQLite file of a service, shared by its instances, which are separate processes.

    Opening it sets WAL mode (readers and the one writer do not block each other),
    synchronous=NORMAL (safe with WAL), foreign keys on and a busy timeout, then runs
    the `schema` statements (which should be idempotent, `CREATE ... IF NOT EXISTS`)
    in one write transaction.

    Work happens in transactions: `write()` for anything that changes rows, `read()`
    for consistent reads. Each has its own connection and lock. In WAL mode a reader
    does not wait for a writer (only, rarely, for recovery after a crash), so reads are
    fast enough to run on the event loop itself;
    a write may wait up to the busy timeout for another process's write lock, so
    servicers run writes in a worker thread (`asyncio.to_thread`).
    """

    def __init__(
        self, path: Path, schema: Sequence[str], *, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = path
        self._writer = _Connection(path, busy_timeout)
        with self.write() as db:
            for statement in schema:
                db.execute(statement)
        self._reader = _Connection(path, busy_timeout)

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction that may change rows: committed if the block ends normally,
        rolled back if it raises.

        It begins with `BEGIN IMMEDIATE`, which takes the database's write lock before
        reading, so the rows a rule checks cannot change before the transaction writes.
        That is what makes a check-then-write (such as a reservation) all-or-nothing
        across processes. Waiting for another process's lock is bounded by the busy
        timeout; past it, `sqlite3.OperationalError` ("database is locked").
        """
        return self._writer.transaction("BEGIN IMMEDIATE")

    def query(self, sql: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one SELECT. A single statement is its own consistent snapshot,
        so it runs without BEGIN/COMMIT: two statements fewer on a hot read path."""
        return self._reader.query(sql, parameters)

    def data_version(self) -> int:
        """A number that changes whenever any connection, in this process or another,
        commits a change to the file (SQLite's `PRAGMA data_version`, read on the
        reader connection, which never writes): what keeps a cache of rows true."""
        return int(self._reader.query("PRAGMA data_version", ())[0][0])

    def read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction: every statement in the block sees the same snapshot, and
        it never waits for a writer."""
        return self._reader.transaction("BEGIN")

    def close(self) -> None:
        """Close both connections; later transactions raise `sqlite3.ProgrammingError`."""
        self._reader.close()
        self._writer.close()


def _switch_to_wal(db: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the file in WAL mode (a no-op once it is), waiting up to `busy_timeout`.

    NOTE: when instances open a new file at the same moment, SQLite may fail the
    switch at once with SQLITE_BUSY instead of calling the busy handler (it will not
    wait for a lock while holding one another connection waits for), so the wait is
    done here, with a short backoff.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class _Connection:
    """One connection, used by one thread at a time."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _switch_to_wal(self._db, busy_timeout)
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute(begin)
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, parameters: Sequence[object]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
