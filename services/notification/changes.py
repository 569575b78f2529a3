"""Wakes the instance's watches when notifications may have been added, by this
instance or another one.

A watch reads what is new, then waits for a `Ticket`. The consumer rings at once after
it commits a notification; `follow_commits` rings when SQLite's data_version says some
connection committed to the file, which is how one replica learns of another's
inserts: one cheap PRAGMA per interval for the whole instance, however many watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Changes", "Ticket", "follow_commits"]


class Ticket:
    """One watcher's wait for the next ring after the ticket was taken."""

    def __init__(self, rung: asyncio.Event) -> None:
        self._rung = rung

    async def wait(self) -> None:
        await self._rung.wait()


class Changes:
    """A bell for the watches of one instance (used on its event loop only)."""

    def __init__(self) -> None:
        self._next = asyncio.Event()

    def ticket(self) -> Ticket:
        """A ticket for the next ring. Take it before reading: a commit between the
        read and the wait then still wakes the watcher."""
        return Ticket(self._next)

    def ring(self) -> None:
        """Wake every watcher holding a ticket."""
        rung, self._next = self._next, asyncio.Event()
        rung.set()


async def follow_commits(
    data_version: Callable[[], int], changes: Changes, *, every: float = 0.1
) -> None:
    """Ring `changes` whenever `data_version()` changes, looking every `every` s, until
    cancelled."""
    seen = data_version()
    while True:
        await asyncio.sleep(every)
        version = data_version()
        if version != seen:
            seen = version
            changes.ring()
