"""OutboxRelay.notify wakes the relay from a store's worker thread as well as from the
event loop (its poll is set far away, so only the wake-up can publish in time)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from google.protobuf.wrappers_pb2 import StringValue

from mesh.events import Event
from mesh.storage import Database
from services.common.messaging import new_event
from services.common.outbox import OUTBOX_SCHEMA, OutboxRelay, record


class Published:
    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    async def publish(self, topic: str, event: Event) -> None:
        await self.events.put(event)


async def test_a_commit_on_a_worker_thread_is_published_at_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "outbox.db", OUTBOX_SCHEMA)
    published = Published()
    relay = OutboxRelay(db, published, poll=60.0)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0)  # the relay's first look finds nothing and waits

        def commit(version: int) -> None:
            with db.write() as conn:
                record(conn, "things", new_event("thing-1", version, StringValue(value="x")))
            relay.notify()

        await asyncio.to_thread(commit, 1)
        first = await asyncio.wait_for(published.events.get(), 5.0)
        commit(2)  # and from the loop's own thread
        second = await asyncio.wait_for(published.events.get(), 5.0)
        assert (first.version, second.version) == (1, 2)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        db.close()
