"""What the service does with each event of its topics: append it to the log, once.

An event the log cannot hold (a version beyond SQLite's integers) is logged and skipped
rather than raised: raising would have the bus deliver it again and again, and hold up
every later event of its topic behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mesh.events import Event, Handler
from services.audit.payloads import payload_json
from services.audit.store import AuditStore

__all__ = ["AuditRecorder"]

log = logging.getLogger("services.audit")


class AuditRecorder:
    """Appends events to an AuditStore, as they come from the bus (`handler(topic)`).

    Args:
        clock: the current time in nanoseconds since the epoch (an entry's recorded_at).
    """

    def __init__(self, store: AuditStore, *, clock: Callable[[], int] = time.time_ns) -> None:
        self._store = store
        self._clock = clock

    def handler(self, topic: str) -> Handler:
        """The bus handler for `topic`: records each event off the event loop."""

        async def handle(event: Event) -> None:
            await asyncio.to_thread(self.record, topic, event)

        return handle

    def record(self, topic: str, event: Event) -> bool:
        """Append `event` of `topic` unless it is in the log already; True if it was
        appended now. Blocking: call it through asyncio.to_thread."""
        try:
            return self._store.append(
                topic,
                event,
                payload_json=payload_json(event.type, event.data),
                recorded_at_ns=self._clock(),
            )
        except ValueError as error:
            log.error(
                "skipped event", extra={"event_id": event.id, "topic": topic, "why": str(error)}
            )
            return False
