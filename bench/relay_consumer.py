"""The shop part's consumer: a process of its own that subscribes to topics with
mesh.events.NatsEventBus, as a service's consumer does, and notes when each event
reaches its handler.

It runs as a "spawn" process (`RelayConsumer`), so it shares nothing with the driver,
on the cores the driver has when it starts it (the load core). Its handler only
notes the event's id, type, `occurred_at` and the wall-clock time it was called;
the subscription then acknowledges it (ack_sync) before fetching the next, one event
in flight per consumer (mesh.events._nats' note), as for any service.

The driver asks it, over a pipe, how many events it has received (since a given
time) and how far behind the broker says it is; and, at the end, for every event it
received with the time JetStream stored it, read back from the stream with a reader
of its own (the ack reply subject of a JetStream message carries that time).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import TYPE_CHECKING

from bench.child import ChildProcess
from bench.shop_results import Received

if TYPE_CHECKING:
    from mesh.events import Event, Handler

__all__ = ["ConsumerStatus", "RelayConsumer", "consumer_main"]

READY_TIMEOUT = 30.0
ANSWER_TIMEOUT = 60.0  # reading the stream back may take a few seconds
STORED_BATCH = 256  # messages per fetch when reading storage times back


@dataclass(frozen=True)
class ConsumerStatus:
    """Events received per topic (those with occurred_at >= the time asked about),
    and the broker's count of events the consumer has not acknowledged yet."""

    received: dict[str, int]
    backlog: dict[str, int]


@dataclass
class _Noted:
    topic: str
    event_id: str
    type: str
    occurred_at: float
    received_at: float


# --- consumer side -----------------------------------------------------------------


def consumer_main(endpoint: str, consumer: str, topics: Sequence[str], conn: Connection) -> None:
    """Entry point of the consumer process: subscribe to every topic as `consumer`,
    send ("ready", None), then answer ("status", since) and ("samples", None) until
    sent None. On an error: ("failed", traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us, even on Ctrl-C
    import uvloop

    try:
        uvloop.run(_consume(endpoint, consumer, topics, conn))
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("failed", traceback.format_exc()))
    conn.close()


async def _consume(endpoint: str, consumer: str, topics: Sequence[str], conn: Connection) -> None:
    from mesh.events import NatsEventBus

    noted: list[_Noted] = []

    def handler_of(topic: str) -> Handler:
        async def handle(event: Event) -> None:
            noted.append(_Noted(topic, event.id, event.type, event.occurred_at, time.time()))

        return handle

    async with await NatsEventBus.connect(endpoint, name=f"bench {consumer}") as bus:
        for topic in topics:
            await bus.subscribe(topic, consumer, handler_of(topic))
        conn.send(("ready", None))
        while True:
            order: tuple[str, float | None] | None = await asyncio.to_thread(conn.recv)
            if order is None:
                return
            kind, since = order
            if kind == "status":
                backlog = {topic: (await bus.backlog(topic, consumer)).events for topic in topics}
                after = since or 0.0
                received = {
                    topic: sum(1 for n in noted if n.topic == topic and n.occurred_at >= after)
                    for topic in topics
                }
                conn.send(("status", ConsumerStatus(received, backlog)))
            elif kind == "samples":
                stored = await _storage_times(endpoint, topics)
                conn.send(("samples", [_received(n, stored) for n in noted]))


def _received(noted: _Noted, stored: dict[str, float]) -> Received:
    return Received(
        topic=noted.topic,
        event_id=noted.event_id,
        type=noted.type,
        occurred_at=noted.occurred_at,
        received_at=noted.received_at,
        stored_at=stored.get(noted.event_id, math.nan),
    )


async def _storage_times(endpoint: str, topics: Sequence[str]) -> dict[str, float]:
    """Event id -> the wall-clock time JetStream stored it, for every message of the
    topics, read with an ephemeral reader that acknowledges nothing."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    client = await nats.connect(servers=[f"nats://{endpoint}"], name="bench storage times")
    stored: dict[str, float] = {}
    try:
        js = client.jetstream(timeout=10.0)
        for topic in topics:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
            )
            # Topic T is subject shop.T (mesh.events' NATS layout); the stream is
            # found by its subject.
            reader = await js.pull_subscribe(f"shop.{topic}", config=config)
            try:
                remaining = (await reader.consumer_info()).num_pending or 0
                while remaining > 0:
                    batch = await reader.fetch(min(remaining, STORED_BATCH), timeout=10.0)
                    remaining -= len(batch)
                    for message in batch:
                        event_id = (message.headers or {}).get("Nats-Msg-Id")
                        if event_id is not None:
                            stored[event_id] = message.metadata.timestamp.timestamp()
            finally:
                await reader.unsubscribe()
    finally:
        await client.close()
    return stored


# --- driver side -------------------------------------------------------------------


class RelayConsumer:
    """The consumer process, alive from `async with` until its end; ended on any exit
    (asked to after a clean run, else terminated)."""

    def __init__(self, endpoint: str, consumer: str, topics: Sequence[str]) -> None:
        self._child = ChildProcess("relay consumer", consumer_main, (endpoint, consumer, topics))

    @property
    def pid(self) -> int:
        return self._child.pid

    async def __aenter__(self) -> RelayConsumer:
        await self._child.start(READY_TIMEOUT)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._child.end(asked=kind is None)

    async def status(self, since: float | None = None) -> ConsumerStatus:
        """Events received (with occurred_at >= `since`) and the backlog, per topic."""
        value = await self._child.ask(("status", since), "status", ANSWER_TIMEOUT)
        assert isinstance(value, ConsumerStatus)
        return value

    async def samples(self) -> list[Received]:
        """Every event received so far, with its storage time (NaN if not found)."""
        value = await self._child.ask(("samples", None), "samples", ANSWER_TIMEOUT)
        assert isinstance(value, list)
        return value
