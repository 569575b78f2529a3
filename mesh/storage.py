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
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

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
    for consistent reads. The methods block; stores are called through
    `asyncio.to_thread`, so the one connection is shared by those threads under a lock
    and transactions of one process never interleave on it.
    """

    def __init__(
        self, path: Path, schema: Sequence[str], *, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._connection.execute("PRAGMA journal_mode = WAL")
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._connection.execute("PRAGMA foreign_keys = ON")
        with self.write() as db:
            for statement in schema:
                db.execute(statement)

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction that may change rows: committed if the block ends normally,
        rolled back if it raises.

        It begins with `BEGIN IMMEDIATE`, which takes the database's write lock before
        reading, so the rows a rule checks cannot change before the transaction writes.
        That is what makes a check-then-write (such as a reservation) all-or-nothing
        across processes. Waiting for another process's lock is bounded by the busy
        timeout; past it, `sqlite3.OperationalError` ("database is locked").
        """
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction: every statement in the block sees the same snapshot."""
        return self._transaction("BEGIN")

    def close(self) -> None:
        """Close the connection; later transactions raise `sqlite3.ProgrammingError`."""
        with self._lock:
            self._connection.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute(begin)
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
