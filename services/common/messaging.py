"""A service's side of the event bus, under the runtime: its outbox relayed and its
consumers subscribed in the background, both riding out a broker that is down when the
instance starts (the instance serves meanwhile; its events wait in the outbox).

    outbox = relay_outbox(rt, store.database)    # publish what the store records
    consume(rt, "product", "inventory", handler)  # have handler called per event
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from google.protobuf.message import Message
from prometheus_client import Gauge

from mesh.backoff import Backoff
from mesh.events import BrokerUnavailable, Event, Handler, Subscription
from mesh.server import Runtime
from mesh.storage import Database
from mesh.tasks import cancel_and_wait, start_background
from services.common.outbox import OutboxRelay
from services.common.projection import Projection

__all__ = ["RuntimePublisher", "consume", "follow", "new_event", "relay_outbox"]

log = logging.getLogger("services.messaging")

_RETRY = Backoff(initial=0.5, maximum=10.0)


def new_event(stream: str, version: int, message: Message, *, at: float | None = None) -> Event:
    """Event `version` of `stream` carrying `message` (its type is the message's full
    name), with a new id, occurring now unless `at` says when."""
    return Event(
        id=str(uuid.uuid4()),
        stream=stream,
        type=message.DESCRIPTOR.full_name,
        data=message.SerializeToString(deterministic=True),
        occurred_at=time.time() if at is None else at,
        version=version,
    )


class RuntimePublisher:
    """Publishes on the runtime's bus, connecting to it on first use: a broker that is
    away raises BrokerUnavailable, which the relay answers by trying again later."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def publish(self, topic: str, event: Event) -> None:
        bus = await self._rt.event_bus()
        await bus.publish(topic, event)


def relay_outbox(rt: Runtime, db: Database, *, poll: float = 0.2) -> OutboxRelay:
    """Start relaying `db`'s outbox to the mesh's bus until the instance closes; call
    `notify()` on the relay after a commit that recorded events, to publish at once."""
    relay = OutboxRelay(db, RuntimePublisher(rt), poll=poll, holder=rt.settings.instance_id)
    task = start_background(relay.run(), "outbox relay")
    rt.on_close(lambda: cancel_and_wait(task))  # registered after the store: runs before it closes
    return relay


def consume(rt: Runtime, topic: str, consumer: str, handler: Handler) -> None:
    """Subscribe `handler` to `topic` as `consumer` once the bus answers, until the
    instance closes. The handler must be idempotent by event id (delivery is at least
    once): services.common.outbox.Inbox or a projection's stream versions do that."""
    subscription: list[Subscription] = []

    async def subscribe() -> None:
        failures = 0
        while True:
            try:
                bus = await rt.event_bus()
                subscription.append(await bus.subscribe(topic, consumer, handler))
                log.info("consuming %s as %s", topic, consumer)
                return
            except BrokerUnavailable as error:
                delay = _RETRY.delay(failures)
                failures += 1
                log.warning("cannot consume %s yet, again in %.1fs: %s", topic, delay, error)
                await asyncio.sleep(delay)

    task = start_background(subscribe(), f"consumer {consumer} of {topic}")

    async def stop() -> None:
        await cancel_and_wait(task)
        for running in subscription:
            await running.aclose()

    rt.on_close(stop)


def follow(rt: Runtime, projection: Projection, *, lag_every: float = 1.0) -> None:
    """Keep `projection` up to date with its topics, as consumer `projection.name`, and
    its lag in rt.metrics: projection_lag_events and projection_lag_seconds (label
    `projection`), read from the broker every `lag_every` s."""
    for topic in projection.topics:
        consume(rt, topic, projection.name, projection.handler(topic))
    labels = {"projection": projection.name}
    events = Gauge(
        "projection_lag_events",
        "Events of its topics the read model has not applied yet",
        ["projection"],
        registry=rt.metrics,
    ).labels(**labels)
    seconds = Gauge(
        "projection_lag_seconds",
        "Seconds between the newest event of its topics and the newest it applied",
        ["projection"],
        registry=rt.metrics,
    ).labels(**labels)

    async def watch() -> None:
        while True:
            with contextlib.suppress(BrokerUnavailable):  # the gauges keep their last values
                lag = await projection.lag(await rt.event_bus())
                events.set(lag.events)
                seconds.set(lag.seconds)
            await asyncio.sleep(lag_every)

    task = start_background(watch(), f"lag of {projection.name}")
    rt.on_close(lambda: cancel_and_wait(task))
