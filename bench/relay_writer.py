"""The shop part's relay alone: a process that commits events to an outbox at a fixed
rate and relays them to the broker as a service does, with no saga beside it.

Each event is its own write transaction (a row of the writer's own table and the
event, `services.common.outbox.record`, in one mesh.storage.Database transaction) on
a worker thread, which then wakes the relay on the loop (`OutboxRelay.notify`
through call_soon_threadsafe), exactly as order's and payment's stores do. The relay
is services.common.outbox.OutboxRelay at relay_outbox's poll, on a NatsEventBus; its
bus is wrapped to note when each publish was called and when the broker acknowledged
it. So every event has four times: built (its occurred_at), committed, handed to the
bus, acknowledged; the consumer adds the fifth.

The writer runs as a "spawn" process (`RelayWriter`) on the cores of the driver's
thread that starts it (the driver starts it on the server core, as a service).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Collection
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from bench.child import ChildProcess
from bench.shop_results import Written

if TYPE_CHECKING:
    from mesh.events import Event, NatsEventBus
    from mesh.storage import Database

__all__ = ["PROBE_TYPE", "RelayWriter", "writer_main"]

PROBE_TYPE = "bench.relay.v1.Probe"
PROBE_BYTES = 120  # about an OrderPlaced of one line
READY_TIMEOUT = 30.0
PUBLISHED_TIMEOUT = 30.0  # seconds past the last commit for the relay to publish all
_TABLE = "CREATE TABLE IF NOT EXISTS probes (n INTEGER PRIMARY KEY, at REAL NOT NULL)"


class _TimedBus:
    """The relay's publisher: the bus, noting each publish's call and acknowledgement."""

    def __init__(self, bus: NatsEventBus) -> None:
        self._bus = bus
        self._published = asyncio.Event()
        self.times: dict[str, tuple[float, float]] = {}

    async def publish(self, topic: str, event: Event) -> None:
        called = time.time()
        await self._bus.publish(topic, event)
        self.times[event.id] = (called, time.time())
        self._published.set()

    async def wait_for(self, event_ids: Collection[str]) -> None:
        """Until every event of `event_ids` has been published."""
        while any(event_id not in self.times for event_id in event_ids):
            self._published.clear()
            await self._published.wait()


# --- writer side -------------------------------------------------------------------


def writer_main(endpoint: str, database: Path, topic: str, conn: Connection) -> None:
    """Entry point of the writer process: open the database and the relay, send
    ("ready", None), then for each ("run", rate, count) commit `count` events at
    `rate` per second and send ("written", [Written, ...]) once the relay has
    published them all, until sent None. On an error: ("failed", traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us, even on Ctrl-C
    import uvloop

    try:
        uvloop.run(_serve(endpoint, database, topic, conn))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("failed", traceback.format_exc()))
    conn.close()


async def _serve(endpoint: str, database: Path, topic: str, conn: Connection) -> None:
    from mesh.events import NatsEventBus
    from mesh.storage import Database
    from mesh.tasks import cancel_and_wait, start_background
    from services.common.outbox import OUTBOX_SCHEMA, OutboxRelay

    db = Database(database, (*OUTBOX_SCHEMA, _TABLE))
    try:
        async with await NatsEventBus.connect(endpoint, name="bench relay writer") as bus:
            timed = _TimedBus(bus)
            relay = OutboxRelay(db, timed)  # the default poll, as relay_outbox's
            task = start_background(relay.run(), "outbox relay")
            try:
                conn.send(("ready", None))
                while (order := await asyncio.to_thread(conn.recv)) is not None:
                    _, rate, count = order
                    written = await _write(db, topic, rate, count, relay.notify, timed)
                    conn.send(("written", written))
            finally:
                await cancel_and_wait(task)
    finally:
        db.close()


async def _write(
    db: Database,
    topic: str,
    rate: float,
    count: int,
    wake: Callable[[], None],
    timed: _TimedBus,
) -> list[Written]:
    loop = asyncio.get_running_loop()

    def commit(n: int) -> tuple[str, float, float]:
        from mesh.events import Event
        from services.common.outbox import record

        event = Event(
            id=uuid.uuid4().hex,
            stream=f"probe-{topic}",
            type=PROBE_TYPE,
            data=bytes(PROBE_BYTES),
            occurred_at=time.time(),  # built just before its commit, as a service's
            version=n + 1,
        )
        with db.write() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO probes (n, at) VALUES (?, ?)", (n, event.occurred_at)
            )
            record(tx, topic, event)
        committed = time.time()
        loop.call_soon_threadsafe(wake)  # what a store's on_events callback does
        return event.id, event.occurred_at, committed

    first = time.monotonic()
    commits = []
    for n in range(count):
        await asyncio.sleep(max(0.0, first + n / rate - time.monotonic()))
        commits.append(await asyncio.to_thread(commit, n))
    async with asyncio.timeout(PUBLISHED_TIMEOUT):
        await timed.wait_for([event_id for event_id, _, _ in commits])
    return [
        Written(event_id, occurred, committed, *timed.times[event_id])
        for event_id, occurred, committed in commits
    ]


# --- driver side -------------------------------------------------------------------


class RelayWriter:
    """The writer process, alive from `async with` until its end; ended on any exit."""

    def __init__(self, endpoint: str, database: Path, topic: str) -> None:
        self._child = ChildProcess("relay writer", writer_main, (endpoint, database, topic))

    @property
    def pid(self) -> int:
        return self._child.pid

    async def __aenter__(self) -> RelayWriter:
        await self._child.start(READY_TIMEOUT)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._child.end(asked=kind is None)

    async def run(self, rate: float, count: int) -> list[Written]:
        """Commit `count` events at `rate`/s; their times once all are published."""
        timeout = count / rate + PUBLISHED_TIMEOUT + 10
        value = await self._child.ask(("run", rate, count), "written", timeout)
        assert isinstance(value, list)
        return value
