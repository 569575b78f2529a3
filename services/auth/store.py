"""Auth's SQLite database, `<data_dir>/auth.db`: users and signing keys.

Every instance of the service opens the same file through a `mesh.storage.Database`,
so replicas share users and keys (and so sign with the same keys). Each write is one
short write transaction. Reads are quick and never wait for a writer: call them on the
event loop. Writes may wait for another instance's write lock: call them through
`asyncio.to_thread`.

The signing keys' private halves are stored here as PEM: a development setup (see
services.auth.keys).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mesh.problems import AlreadyExists
from mesh.storage import Database
from services.auth.domain import USER, User, username_key
from services.auth.keys import SigningKey

__all__ = ["AuthStore"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS users (
        user_id       TEXT PRIMARY KEY,
        username      TEXT NOT NULL,
        username_key  TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS signing_keys (
        kid         TEXT PRIMARY KEY,
        private_pem BLOB NOT NULL,
        n           TEXT NOT NULL,
        e           TEXT NOT NULL,
        created_at  REAL NOT NULL,
        retired_at  REAL
    )
    """,
)

_USER_COLUMNS = "user_id, username, password_hash"
_KEY_COLUMNS = "kid, private_pem, n, e, created_at, retired_at"


class AuthStore:
    """Users by username (compared case-insensitively) and signing keys by kid. Open with
    `AuthStore(path)`; the schema is created if missing. It is the KeyStore of
    services.auth.keys."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def version(self) -> int:
        """Changes whenever any instance commits a change."""
        return self._db.data_version()

    def add_user(self, user: User) -> None:
        """Store a new user.

        Raises:
            AlreadyExists: a user has this username already, in any case.
        """
        try:
            with self._db.write() as db:
                db.execute(
                    "INSERT INTO users (user_id, username, username_key, password_hash)"
                    " VALUES (?, ?, ?, ?)",
                    (user.user_id, user.username, username_key(user.username), user.password_hash),
                )
        except sqlite3.IntegrityError:
            # user_id is 64 random bits: the constraint that failed is username_key's.
            raise AlreadyExists(USER, user.username) from None

    def find_user(self, username: str) -> User | None:
        """The user with this username, in any case, or None."""
        rows = self._db.query(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username_key = ?", (username_key(username),)
        )
        return User(*rows[0]) if rows else None

    def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash (after a rehash with new costs)."""
        with self._db.write() as db:
            db.execute(
                "UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id)
            )

    def signing_keys(self) -> list[SigningKey]:
        """Every stored signing key, oldest first."""
        rows = self._db.query(f"SELECT {_KEY_COLUMNS} FROM signing_keys ORDER BY created_at")
        return [
            SigningKey(
                kid=kid, private_pem=bytes(pem), n=n, e=e, created_at=created, retired_at=retired
            )
            for kid, pem, n, e, created, retired in rows
        ]

    def rotate(
        self, key: SigningKey, *, forget_retired_before: float, unless_newer_than: float | None
    ) -> bool:
        """Store `key` as the signing key, retiring every other key at `key.created_at`,
        and delete the keys retired before `forget_retired_before`, in one transaction.
        With `unless_newer_than`, do nothing if the signing key was made after it
        (another instance rotated first). True if `key` was stored."""
        with self._db.write() as db:
            if unless_newer_than is not None:
                (newest,) = db.execute(
                    "SELECT MAX(created_at) FROM signing_keys WHERE retired_at IS NULL"
                ).fetchone()
                if newest is not None and newest > unless_newer_than:
                    return False
            db.execute(
                "UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL",
                (key.created_at,),
            )
            db.execute(
                f"INSERT INTO signing_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                (key.kid, key.private_pem, key.n, key.e, key.created_at),
            )
            db.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?",
                (forget_retired_before,),
            )
        return True
