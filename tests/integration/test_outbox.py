"""The outbox and the inbox against a real NATS JetStream: what a transaction commits
is published, in order per stream, through a broker outage, and a consumer with an
inbox applies each event once however often it is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.events import Event, NatsEventBus
from mesh.storage import Database
from mesh.supervisor import NatsServer
from mesh.tasks import cancel_and_wait, start_background
from services.common.outbox import OUTBOX_SCHEMA, Inbox, OutboxRelay, record
from tests.harness.nats import nats_server

SCHEMA = (*OUTBOX_SCHEMA, "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)")


def event(stream: str, version: int) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        stream=stream,
        type="test.v1.Placed",
        data=f"{stream}:{version}".encode(),
        occurred_at=time.time(),
        version=version,
    )


def place(db: Database, order_id: str, events: list[Event]) -> None:
    """A state change and its events in one transaction."""
    with db.write() as conn:
        conn.execute("INSERT INTO orders (id) VALUES (?)", (order_id,))
        for item in events:
            record(conn, "orders", item)


@contextlib.asynccontextmanager
async def relaying(db: Database, endpoint: str) -> AsyncIterator[OutboxRelay]:
    bus = await NatsEventBus.connect(endpoint, name="relay")
    relay = OutboxRelay(db, bus, poll=0.05)
    task = start_background(relay.run(), "outbox relay")
    try:
        yield relay
    finally:
        await cancel_and_wait(task)
        await bus.aclose()


@contextlib.asynccontextmanager
async def consuming(endpoint: str, consumer: str, into: list[Event]) -> AsyncIterator[None]:
    """A durable consumer of "orders" that collects what it gets."""
    bus = await NatsEventBus.connect(endpoint, name=consumer)

    async def handler(item: Event) -> None:
        into.append(item)

    subscription = await bus.subscribe("orders", consumer, handler)
    try:
        yield
    finally:
        await subscription.aclose()
        await bus.aclose()


async def until(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(tmp_path / "service.db", SCHEMA)
    yield db  # type: ignore[misc]
    db.close()


async def test_committed_events_are_published_in_order_and_rolled_back_ones_never(
    nats: NatsServer, database: Database
) -> None:
    topic_consumer = f"c{uuid.uuid4().hex[:8]}"
    got: list[Event] = []
    placed = [event("order-a", v) for v in (1, 2, 3)]
    with contextlib.suppress(RuntimeError), database.write() as conn:
        record(conn, "orders", event("order-ghost", 1))
        raise RuntimeError("the change fails: its event goes with it")
    async with relaying(database, nats.endpoint), consuming(nats.endpoint, topic_consumer, got):
        place(database, "a", placed)
        await until(lambda: len([e for e in got if e.stream == "order-a"]) >= 3)
    assert [e.id for e in got if e.stream == "order-a"] == [e.id for e in placed]
    assert all(e.stream != "order-ghost" for e in got)
    assert database.query("SELECT COUNT(*) FROM outbox WHERE stream = 'order-ghost'") == [(0,)]


async def test_a_broker_outage_loses_nothing_and_each_consumer_applies_each_event_once(
    tmp_path: Path, database: Database
) -> None:
    async with nats_server(tmp_path / "broker") as broker:
        applied = Database(
            tmp_path / "consumer.db", (*OUTBOX_SCHEMA, "CREATE TABLE seen (body BLOB)")
        )
        inbox = Inbox(applied, "billing")
        delivered: list[Event] = []
        try:
            broker_bus = await NatsEventBus.connect(broker.endpoint, name="billing")

            async def apply(item: Event) -> None:
                delivered.append(item)
                await asyncio.to_thread(
                    inbox.handle,
                    item,
                    lambda db, e: db.execute("INSERT INTO seen VALUES (?)", (e.data,)),
                )

            subscription = await broker_bus.subscribe("orders", "billing", apply)
            async with relaying(database, broker.endpoint) as relay:
                place(database, "before", [event("order-b", 1)])
                await until(lambda: len(delivered) >= 1)
                await broker.stop()
                for n in range(2, 7):  # placed while the broker is down: kept in the outbox
                    place(database, f"during-{n}", [event("order-b", n)])
                await asyncio.sleep(0.5)
                assert len(delivered) == 1
                await broker.start()
                await until(lambda: len(applied.query("SELECT body FROM seen")) >= 6, timeout=30)
                published = relay.published
            # A redelivery of an event already applied changes nothing.
            assert (
                inbox.handle(
                    delivered[0], lambda db, e: db.execute("INSERT INTO seen VALUES (?)", (e.data,))
                )
                is False
            )
            await subscription.aclose()
            await broker_bus.aclose()
            bodies = [row[0] for row in applied.query("SELECT body FROM seen ORDER BY rowid")]
        finally:
            applied.close()
    assert bodies == [f"order-b:{n}".encode() for n in range(1, 7)]  # each once, in order
    assert published >= 6
    assert database.query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL") == [(0,)]


async def test_two_relays_on_one_database_publish_each_event_in_order(
    nats: NatsServer, tmp_path: Path
) -> None:
    first = Database(tmp_path / "shared.db", SCHEMA)
    second = Database(tmp_path / "shared.db", SCHEMA)
    consumer = f"c{uuid.uuid4().hex[:8]}"
    got: list[Event] = []
    stream = f"order-{uuid.uuid4().hex[:6]}"
    try:
        async with (
            relaying(first, nats.endpoint),
            relaying(second, nats.endpoint),
            consuming(nats.endpoint, consumer, got),
        ):
            for n in range(1, 21):
                place(first if n % 2 else second, f"o{n}", [event(stream, n)])
            await until(lambda: len([e for e in got if e.stream == stream]) >= 20)
    finally:
        first.close()
        second.close()
    mine = [e.version for e in got if e.stream == stream]
    assert mine == list(range(1, 21))
