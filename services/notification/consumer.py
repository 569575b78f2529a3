"""What the service does with each event of its topics: make its notification, once.

An event whose payload does not parse (or names no valid user) is logged and skipped
rather than raised: raising would have the bus deliver it again and again, and hold up
every later event of its topic behind it.
"""

from __future__ import annotations

import asyncio
import logging

from mesh.events import Event
from services.notification import domain
from services.notification.changes import Changes
from services.notification.store import NotificationStore

__all__ = ["NotificationConsumer"]

log = logging.getLogger("services.notification")


class NotificationConsumer:
    """The bus handler of every topic the service follows (`handle`)."""

    def __init__(self, store: NotificationStore, changes: Changes) -> None:
        self._store = store
        self._changes = changes

    async def handle(self, event: Event) -> None:
        """Store the notification `event` makes, if any and if not stored before, and
        wake this instance's watches."""
        try:
            draft = domain.compose(event.type, event.data)
        except ValueError as error:
            log.warning(
                "skipped event", extra={"event_id": event.id, "type": event.type, "why": str(error)}
            )
            return
        if draft is None:
            return
        if await asyncio.to_thread(self._store.add, event, draft):
            self._changes.ring()
