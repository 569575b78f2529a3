"""OutboxRelay.publish_pending with a bus in memory: a batch's streams go out side by
side, each in commit order; a refusal stops only its own stream, and what the broker
stored is marked; the lease is claimed once for many batches, and marking renews it;
running, a batch is read and sent while the one before is being marked, and no event
goes out twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.events import BrokerUnavailable, Event
from mesh.storage import Database
from services.common.outbox import OUTBOX_SCHEMA, OutboxRelay, record


def event(stream: str, version: int) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        stream=stream,
        type="test.v1.Happened",
        data=f"{stream}:{version}".encode(),
        occurred_at=0.0,
        version=version,
    )


def commit(db: Database, *events: Event) -> None:
    with db.write() as conn:
        for item in events:
            record(conn, "things", item)


def unpublished(db: Database) -> list[str]:
    rows = db.query("SELECT data FROM outbox WHERE published_at IS NULL ORDER BY position")
    return [bytes(row[0]).decode() for row in rows]


class Bus:
    """Stores what it is given; a publish of a `held` stream waits until released, one
    of a `refused` stream raises BrokerUnavailable."""

    def __init__(self, *, held: str = "", refused: str = "") -> None:
        self.stored: list[str] = []
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.changed = asyncio.Event()  # set at each event stored
        self._held, self._refused = held, refused

    async def publish(self, topic: str, item: Event) -> None:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # a round trip: the other streams' publishes start
            if item.stream == self._held:
                await self.release.wait()
            if item.stream == self._refused:
                raise BrokerUnavailable(f"{item.stream} refused")
            self.stored.append(item.data.decode())
            self.changed.set()
        finally:
            self.in_flight -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "outbox.db", OUTBOX_SCHEMA)
    yield database
    database.close()


async def test_a_batch_publishes_its_streams_side_by_side_each_in_order(db: Database) -> None:
    commit(db, event("a", 1), event("b", 1), event("a", 2), event("c", 1), event("b", 2))
    bus = Bus()

    assert await OutboxRelay(db, bus).publish_pending() == 5

    assert bus.most_in_flight == 3  # a, b and c at once
    assert [x for x in bus.stored if x.startswith("a")] == ["a:1", "a:2"]
    assert [x for x in bus.stored if x.startswith("b")] == ["b:1", "b:2"]
    assert unpublished(db) == []


async def test_a_stream_waits_for_its_earlier_event_whatever_the_others_do(db: Database) -> None:
    commit(db, event("slow", 1), event("slow", 2), event("quick", 1), event("quick", 2))
    bus = Bus(held="slow")

    batch = asyncio.create_task(OutboxRelay(db, bus).publish_pending())
    while len(bus.stored) < 2:
        bus.changed.clear()
        await asyncio.wait_for(bus.changed.wait(), 5.0)
    assert bus.stored == ["quick:1", "quick:2"]  # slow:2 not sent before slow:1 is stored
    bus.release.set()

    assert await batch == 4
    assert bus.stored == ["quick:1", "quick:2", "slow:1", "slow:2"]


async def test_a_refusal_stops_its_stream_and_marks_what_the_broker_stored(
    db: Database,
) -> None:
    commit(db, event("bad", 1), event("good", 1), event("bad", 2), event("good", 2))
    relay = OutboxRelay(db, Bus(refused="bad"), holder="order-1")

    with pytest.raises(BrokerUnavailable):
        await relay.publish_pending()

    assert unpublished(db) == ["bad:1", "bad:2"]  # the next batch starts again from bad:1
    again = Bus()  # the broker is back (the instance, restarted, has the same holder)
    assert await OutboxRelay(db, again, holder="order-1").publish_pending() == 2
    assert again.stored == ["bad:1", "bad:2"]


async def test_the_lease_is_claimed_once_for_many_batches_and_kept_by_marking(
    db: Database,
) -> None:
    clock = Clock()
    first = OutboxRelay(db, Bus(), clock=clock, holder="first")
    other = OutboxRelay(db, Bus(), clock=clock, holder="other")
    commit(db, event("a", 1))
    assert await first.publish_pending() == 1
    claimed = db.query("SELECT until FROM outbox_lease")

    clock.now += 1.0  # most of the lease left: no claim, no write
    assert await first.publish_pending() == 0
    assert db.query("SELECT until FROM outbox_lease") == claimed

    clock.now += 1.0  # still no claim, but marking the batch renews the lease
    commit(db, event("a", 2))
    assert await first.publish_pending() == 1
    clock.now += 4.0  # past the claim's end, within the renewal's
    commit(db, event("b", 1))
    assert await other.publish_pending() == 0
    assert unpublished(db) == ["b:1"]

    clock.now += 10.0  # the first relay has gone quiet: its lease ends, another may claim
    assert await other.publish_pending() == 1
    assert await first.publish_pending() == 0  # and now the first waits its turn


async def test_running_it_sends_each_event_once_while_the_last_batch_is_being_marked(
    db: Database,
) -> None:
    # 250 events: three batches, each read while the one before is still being marked.
    for n in range(1, 26):
        commit(db, *(event(f"s{stream}", n) for stream in range(10)))
    bus = Bus()
    relay = OutboxRelay(db, bus, poll=60.0)
    running = asyncio.create_task(relay.run())
    try:
        while len(bus.stored) < 250:
            bus.changed.clear()
            await asyncio.wait_for(bus.changed.wait(), 5.0)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    assert len(bus.stored) == len(set(bus.stored)) == 250
    for stream in range(10):
        mine = [x for x in bus.stored if x.startswith(f"s{stream}:")]
        assert mine == [f"s{stream}:{n}" for n in range(1, 26)]
    assert unpublished(db) == []  # stopping waits for the last marking
