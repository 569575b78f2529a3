"""The EventBus interface on a real broker: every adapter must pass these, so they use
nothing but EventBus, Subscription and Event (an adapter joins by adding to ADAPTERS).

Each test has topics of its own on the run's broker; the outage test starts its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from mesh.backoff import Backoff
from mesh.config import parse_config
from mesh.events import (
    BrokerUnavailable,
    Event,
    EventBus,
    Handler,
    NatsEventBus,
    RabbitMqEventBus,
    event_bus,
)
from mesh.state import MeshState, write_state
from mesh.supervisor import NatsServer, free_port
from tests.harness.nats import nats_server, server_log
from tests.harness.rabbitmq import RabbitMqServer, rabbitmq_server
from tests.harness.rabbitmq import server_log as rabbitmq_log

PUBLISH_TIMEOUT = 1.0
OUTAGE_BOUND = PUBLISH_TIMEOUT + 1.0
"""Seconds a publish may take to fail while the broker is down."""
DELIVERY_WAIT = 10.0
"""Seconds an expected delivery may take (retries included)."""
QUIET = 0.6
"""Seconds that show nothing more arrives: several polls, and a retry's backoff."""


class Broker(Protocol):
    """A broker process a test can stop and start again (same ports, same store)."""

    @property
    def endpoint(self) -> str: ...

    async def start(self, timeout: float = 30.0) -> None: ...

    async def stop(self, timeout: float = 5.0) -> None: ...


@dataclass(frozen=True)
class Adapter:
    name: str
    fixture: str
    """The session fixture of the run's broker."""
    own_broker: Callable[[Path], contextlib.AbstractAsyncContextManager[Broker]]
    connect: Callable[[str], Awaitable[EventBus]]
    log: Callable[[Broker], str]


async def _connect_nats(endpoint: str) -> EventBus:
    return await NatsEventBus.connect(
        endpoint,
        publish_timeout=PUBLISH_TIMEOUT,
        connect_timeout=2.0,
        reconnect_wait=0.1,
        fetch_wait=0.2,
        retry_backoff=Backoff(initial=0.05, maximum=0.2),
    )


def _nats_log(broker: Broker) -> str:
    assert isinstance(broker, NatsServer)
    return server_log(broker)


async def _connect_rabbitmq(endpoint: str) -> EventBus:
    return await RabbitMqEventBus.connect(
        endpoint,
        publish_timeout=PUBLISH_TIMEOUT,
        connect_timeout=2.0,
        reconnect_wait=0.1,
        takeover_wait=0.2,
        retry_backoff=Backoff(initial=0.05, maximum=0.2),
    )


def _rabbitmq_log(broker: Broker) -> str:
    assert isinstance(broker, RabbitMqServer)
    return rabbitmq_log(broker)


ADAPTERS = [
    Adapter("nats", "nats", nats_server, _connect_nats, _nats_log),
    Adapter("rabbitmq", "rabbitmq", rabbitmq_server, _connect_rabbitmq, _rabbitmq_log),
]


@pytest.fixture(params=ADAPTERS, ids=lambda adapter: adapter.name)
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def broker(adapter: Adapter, request: pytest.FixtureRequest) -> Broker:
    """The run's broker of `adapter` (looked up here: an async fixture cannot)."""
    found: Broker = request.getfixturevalue(adapter.fixture)
    return found


@pytest.fixture
async def bus(adapter: Adapter, broker: Broker) -> AsyncIterator[EventBus]:
    connected = await adapter.connect(broker.endpoint)
    try:
        yield connected
    finally:
        await connected.aclose()


@pytest.fixture
def topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def an_event(stream: str, version: int) -> Event:
    payload = StringValue(value=f"{stream} v{version}").SerializeToString()
    return Event(
        id=uuid.uuid4().hex,
        stream=stream,
        type="google.protobuf.StringValue",
        data=payload,
        occurred_at=time.time(),
        version=version,
    )


class Collector:
    """A handler that keeps what it is given, in order; `fail` names event ids whose
    next delivery raises (once each)."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.deliveries: asyncio.Queue[Event] = asyncio.Queue()
        self._fail = set(fail or ())

    async def __call__(self, event: Event) -> None:
        await self.deliveries.put(event)
        if event.id in self._fail:
            self._fail.discard(event.id)
            raise RuntimeError(f"the handler fails on {event.id}, this once")

    async def take(self, count: int) -> list[Event]:
        taken: list[Event] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DELIVERY_WAIT):
                while len(taken) < count:
                    taken.append(await self.deliveries.get())
        assert len(taken) == count, f"{len(taken)} of {count} events arrived: {ids(taken)}"
        return taken

    async def nothing_more(self) -> None:
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(self.deliveries.get(), QUIET)
            raise AssertionError(f"unexpected delivery of {extra.id}")


def ids(events: list[Event]) -> list[str]:
    return [event.id for event in events]


async def publish_all(bus: EventBus, topic: str, events: list[Event]) -> None:
    for event in events:
        await bus.publish(topic, event)


async def publish_once_back(bus: EventBus, topic: str, event: Event, within: float) -> None:
    """Publish `event` again and again until the broker takes it (a retry of the same
    event is safe: that is the point), for at most `within` s."""
    until = time.monotonic() + within
    while True:
        try:
            await bus.publish(topic, event)
            return
        except BrokerUnavailable:
            if time.monotonic() > until:
                raise
            await asyncio.sleep(0.1)


async def test_a_subscriber_gets_every_event_in_order(bus: EventBus, topic: str) -> None:
    published = [an_event(f"order-{n % 2}", n // 2 + 1) for n in range(10)]
    await publish_all(bus, topic, published)
    billing = Collector()

    subscription = await bus.subscribe(topic, "billing", billing)
    try:
        assert await billing.take(10) == published  # every field, exactly
        later = an_event("order-0", 6)
        await bus.publish(topic, later)
        assert await billing.take(1) == [later]
        await billing.nothing_more()
    finally:
        await subscription.aclose()


async def test_a_consumer_resumes_after_its_restart_with_only_what_it_did_not_ack(
    bus: EventBus, topic: str
) -> None:
    first = [an_event("order-1", v) for v in (1, 2, 3)]
    second = [an_event("order-1", v) for v in (4, 5, 6)]
    await publish_all(bus, topic, first)
    before = Collector()
    subscription = await bus.subscribe(topic, "shipping", before)
    try:
        assert await before.take(3) == first
    finally:
        await subscription.aclose()

    await publish_all(bus, topic, second)  # while the consumer is away
    after = Collector()
    subscription = await bus.subscribe(topic, "shipping", after)
    try:
        assert await after.take(3) == second
        await after.nothing_more()
    finally:
        await subscription.aclose()
    assert before.deliveries.empty()


async def test_an_event_whose_handler_raises_comes_again_before_later_ones(
    bus: EventBus, topic: str
) -> None:
    events = [an_event("order-7", v) for v in (1, 2, 3)]
    flaky = Collector(fail={events[1].id})
    await publish_all(bus, topic, events)

    subscription = await bus.subscribe(topic, "billing", flaky)
    try:
        assert ids(await flaky.take(4)) == ids([events[0], events[1], events[1], events[2]])
        await flaky.nothing_more()
    finally:
        await subscription.aclose()


async def test_two_consumers_each_get_every_event(bus: EventBus, topic: str) -> None:
    events = [an_event("order-2", v) for v in range(1, 6)]
    billing, shipping = Collector(), Collector()
    subscriptions = [
        await bus.subscribe(topic, "billing", billing),
        await bus.subscribe(topic, "shipping", shipping),
    ]
    try:
        await publish_all(bus, topic, events)
        assert await billing.take(5) == events
        assert await shipping.take(5) == events
        await billing.nothing_more()
        await shipping.nothing_more()
    finally:
        for subscription in subscriptions:
            await subscription.aclose()


async def test_subscriptions_of_one_consumer_share_its_events_in_order(
    bus: EventBus, topic: str
) -> None:
    events = [an_event("order-3", v) for v in range(1, 9)]
    both = Collector()
    running: list[Event] = []
    overlaps: list[tuple[str, str]] = []

    def handler_of(name: str) -> Handler:
        async def handle(event: Event) -> None:
            overlaps.extend((name, other.id) for other in running)
            running.append(event)
            await asyncio.sleep(0.02)  # long enough for the other to start one, if it could
            running.remove(event)
            await both(event)

        return handle

    subscriptions = [
        await bus.subscribe(topic, "order-history", handler_of(name)) for name in ("a", "b")
    ]
    try:
        await publish_all(bus, topic, events)
        assert await both.take(8) == events
        assert overlaps == []
        await both.nothing_more()
    finally:
        for subscription in subscriptions:
            await subscription.aclose()


async def test_another_subscription_of_a_consumer_goes_on_where_a_closed_one_stopped(
    adapter: Adapter, broker: Broker, topic: str
) -> None:
    events = [an_event("order-t", v) for v in range(1, 7)]
    here, there = Collector(), Collector()
    buses = [await adapter.connect(broker.endpoint) for _ in range(2)]  # two instances
    try:
        first = await buses[0].subscribe(topic, "takeover", here)
        await publish_all(buses[0], topic, events[:3])
        assert await here.take(3) == events[:3]
        second = await buses[1].subscribe(topic, "takeover", there)
        await first.aclose()

        await publish_all(buses[1], topic, events[3:])
        assert await there.take(3) == events[3:]
        await there.nothing_more()
        await second.aclose()
        assert here.deliveries.empty()
    finally:
        for bus in buses:
            await bus.aclose()


async def test_an_event_republished_after_its_consumer_handled_it_is_not_redelivered(
    bus: EventBus, topic: str
) -> None:
    placed, paid = an_event("order-r", 1), an_event("order-r", 2)
    before, after = Collector(), Collector()
    await bus.publish(topic, placed)
    subscription = await bus.subscribe(topic, "billing", before)
    try:
        assert await before.take(1) == [placed]
    finally:
        await subscription.aclose()

    await publish_all(bus, topic, [placed, paid])  # a relay that retried, while it was away
    subscription = await bus.subscribe(topic, "billing", after)
    try:
        assert await after.take(1) == [paid]
        await after.nothing_more()
    finally:
        await subscription.aclose()


async def test_an_event_published_twice_is_delivered_once(bus: EventBus, topic: str) -> None:
    placed, paid = an_event("order-4", 1), an_event("order-4", 2)
    billing = Collector()

    await publish_all(bus, topic, [placed, placed, paid])
    await bus.publish(topic, placed)  # a retry after the next event, too

    subscription = await bus.subscribe(topic, "billing", billing)
    try:
        assert await billing.take(2) == [placed, paid]
        await billing.nothing_more()
    finally:
        await subscription.aclose()


@pytest.mark.timeout(150)  # two broker starts: a RabbitMQ boot takes 4-12 s on a busy machine
async def test_a_broker_outage_fails_publishes_fast_and_loses_no_stored_event(
    adapter: Adapter, tmp_path: Path, topic: str
) -> None:
    async with adapter.own_broker(tmp_path) as broker:
        bus = await adapter.connect(broker.endpoint)
        live = Collector()
        try:
            stored = an_event("order-5", 1)
            await bus.publish(topic, stored)
            watching = await bus.subscribe(f"{topic}.live", "watcher", live)

            await broker.stop()
            started = time.monotonic()
            lost = an_event("order-5", 2)
            with pytest.raises(BrokerUnavailable):
                await bus.publish(topic, lost)
            assert time.monotonic() - started < OUTAGE_BOUND
            with pytest.raises(BrokerUnavailable):
                await bus.subscribe(topic, "late", Collector())

            await broker.start()
            after = an_event("order-5", 3)
            await publish_once_back(bus, topic, after, within=15)
            news = an_event("order-6", 1)
            await publish_once_back(bus, f"{topic}.live", news, within=5)

            assert await live.take(1) == [news], adapter.log(broker)  # it lived through it
            fresh = Collector()
            subscription = await bus.subscribe(topic, "fresh", fresh)
            try:
                got = await fresh.take(2)
                # The failed publish was never acknowledged: an adapter may have stored
                # it all the same (at least once), but it must keep the rest, in order.
                if lost in got:
                    got = [*got, *await fresh.take(1)]
                assert [event for event in got if event != lost] == [stored, after]
                await fresh.nothing_more()
            finally:
                await subscription.aclose()
            await watching.aclose()
        finally:
            await bus.aclose()


async def test_connecting_to_no_broker_raises_broker_unavailable(adapter: Adapter) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await adapter.connect(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5.0


async def test_event_bus_finds_the_broker_in_mesh_yaml_or_the_state_file(
    nats: NatsServer, tmp_path: Path, topic: str
) -> None:
    named = parse_config(
        {"services": {"shop": {}}, "events": {"endpoint": nats.endpoint}}, tmp_path / "mesh.yaml"
    )
    started_here = parse_config({"services": {"shop": {}}}, tmp_path / "mesh.yaml")
    write_state(
        started_here.state_dir,
        MeshState(supervisor_pid=1, etcd_endpoint="", etcd_pid=None, events_endpoint=nats.endpoint),
    )
    event = an_event("order-8", 1)
    for config in (named, started_here):
        bus = await event_bus(config)
        received = Collector()
        try:
            await bus.publish(topic, event)
            subscription = await bus.subscribe(topic, f"reader-{config is named:d}", received)
            assert await received.take(1) == [event]
            await subscription.aclose()
        finally:
            await bus.aclose()


@pytest.mark.parametrize("form", ["host:port", "amqp URL"])
async def test_event_bus_connects_to_the_rabbitmq_broker_mesh_yaml_names(
    rabbitmq: RabbitMqServer, form: str, tmp_path: Path, topic: str
) -> None:
    endpoint = (
        rabbitmq.endpoint if form == "host:port" else f"amqp://guest:guest@{rabbitmq.endpoint}/"
    )
    config = parse_config(
        {"services": {"shop": {}}, "events": {"broker": "rabbitmq", "endpoint": endpoint}},
        tmp_path / "mesh.yaml",
    )
    event = an_event("order-9", 1)
    bus = await event_bus(config)
    try:
        assert isinstance(bus, RabbitMqEventBus)
        await bus.publish(topic, event)
        assert await bus.history(topic) == [event]
    finally:
        await bus.aclose()


async def test_history_is_every_stored_event_of_a_topic_in_order(bus: EventBus, topic: str) -> None:
    other = f"{topic}-other"
    events = [an_event("order-h", v) for v in (1, 2, 3)]
    await publish_all(bus, topic, events)
    await bus.publish(other, an_event("order-x", 1))

    assert ids(await bus.history(topic)) == ids(events)
    everything = ids(await bus.history())
    assert [e for e in everything if e in ids(events)] == ids(events)
    assert len(set(everything)) == len(everything)


async def test_history_of_a_topic_with_no_events_is_empty(bus: EventBus, topic: str) -> None:
    assert await bus.history(topic) == []


async def test_backlog_counts_what_a_consumer_has_not_acknowledged(
    bus: EventBus, topic: str
) -> None:
    assert (await bus.backlog(topic, "lagging")).events == 0
    events = [an_event("order-b", v) for v in (1, 2, 3)]
    await publish_all(bus, topic, events)

    before = await bus.backlog(topic, "lagging")
    assert before.events == 3
    assert before.newest_at == pytest.approx(events[-1].occurred_at)

    collector = Collector()
    subscription = await bus.subscribe(topic, "lagging", collector)
    try:
        await collector.take(3)
        async with asyncio.timeout(DELIVERY_WAIT):  # the last ack may still be on its way
            while (await bus.backlog(topic, "lagging")).events:  # noqa: ASYNC110 (a poll)
                await asyncio.sleep(0.05)
    finally:
        await subscription.aclose()
    assert (await bus.backlog(topic, "lagging")).newest_at == before.newest_at
