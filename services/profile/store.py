"""Profile's read model, `<data_dir>/profile.db`: one row per user, written only by the
projection of the user service's events, read by the queries.

The file is the service's own, shared by its instances (mesh.storage.Database). Each
event is applied in one transaction with the projection's record of how far the
user's stream got (services.common.projection), so a redelivered or older event
changes nothing. A row's `version` is that of the user's latest event applied; an
email change moves it (and `updated`) without changing anything shown.

Reads are single statements and never wait for the projection's writes: call them on
the event loop. Applying and rebuilding go through the Projection, off the loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesh.events import Event
from mesh.storage import Database
from services.common.projection import PROJECTION_SCHEMA, Projection
from services.profile import domain
from services.profile.domain import (
    Deactivated,
    Profile,
    ProfilesQuery,
    Registered,
    Renamed,
    Touched,
)
from services.profile.events import TOPIC, change_of

__all__ = ["PROJECTION", "ProfileStore"]

PROJECTION = "profile"
"""The projection's name, also its consumer's on the bus."""

_SCHEMA = (
    *PROJECTION_SCHEMA,
    """CREATE TABLE IF NOT EXISTS profiles (
        user_id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        display_name TEXT NOT NULL,
        active INTEGER NOT NULL,
        member_since REAL NOT NULL,
        updated REAL NOT NULL,
        version INTEGER NOT NULL
    )""",
    # ListProfiles with active_only walks this instead of skipping inactive rows.
    "CREATE INDEX IF NOT EXISTS profiles_active ON profiles (active, user_id)",
)

_COLUMNS = "user_id, username, display_name, active, member_since, updated, version"


class ProfileStore:
    """Public profiles in one SQLite file, and the projection that keeps them. Open
    with `ProfileStore(path)`; the schema is created if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Database(path, _SCHEMA)
        self.projection = Projection(self._db, PROJECTION, [TOPIC], _apply, _reset)
        """The read model's projection of topic "user" (services.common.projection)."""

    def close(self) -> None:
        self._db.close()

    def get(self, user_id: str) -> Profile | None:
        """The profile of `user_id`, or None if the read model has none."""
        rows = self._db.query(f"SELECT {_COLUMNS} FROM profiles WHERE user_id = ?", (user_id,))
        return _profile(rows[0]) if rows else None

    def page(self, query: ProfilesQuery) -> tuple[list[Profile], str | None]:
        """One page of profiles in user id order, and the last user id of the page if
        more follow (the next page's cursor), else None."""
        where = ["user_id > ?"]
        parameters: list[object] = [query.after or ""]
        if query.active_only:
            where.append("active = 1")
        rows = self._db.query(
            f"SELECT {_COLUMNS} FROM profiles WHERE {' AND '.join(where)} ORDER BY user_id LIMIT ?",
            (*parameters, query.size + 1),  # one more: is there a next page?
        )
        page = [_profile(row) for row in rows[: query.size]]
        return page, page[-1].user_id if len(rows) > query.size else None


def _profile(row: Sequence[Any]) -> Profile:
    user_id, username, display_name, active, member_since, updated, version = row
    return Profile(user_id, username, display_name, bool(active), member_since, updated, version)


def _apply(db: sqlite3.Connection, topic: str, event: Event) -> None:
    """Apply one user event to its profile (the Projection's `apply`).

    Raises:
        ValueError: the event does not parse (events.change_of), registers a user with
            a profile, or changes one without.
    """
    change = change_of(event)
    user_id = domain.user_of_stream(event.stream)
    if isinstance(change, Registered):
        inserted = db.execute(
            f"INSERT INTO profiles ({_COLUMNS}) VALUES (?, ?, ?, 1, ?, ?, ?)"
            " ON CONFLICT (user_id) DO NOTHING",
            (
                user_id,
                change.username,
                change.display_name,
                event.occurred_at,
                event.occurred_at,
                event.version,
            ),
        )
        if inserted.rowcount == 0:
            raise ValueError(f"user {user_id} is registered twice")
        return
    assignments = "updated = ?, version = ?"
    values: list[object] = [event.occurred_at, event.version]
    if isinstance(change, Renamed):
        assignments += ", display_name = ?"
        values.append(change.display_name)
    elif isinstance(change, Deactivated):
        assignments += ", active = 0"
    else:
        assert isinstance(change, Touched)
    updated = db.execute(f"UPDATE profiles SET {assignments} WHERE user_id = ?", (*values, user_id))
    if updated.rowcount == 0:
        raise ValueError(f"a {event.type} of user {user_id}, who has no profile")


def _reset(db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM profiles")
