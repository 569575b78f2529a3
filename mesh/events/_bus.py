"""The event bus as services use it, whatever the broker: two protocols that each
adapter implements (NATS JetStream, RabbitMQ streams) and the interface tests in
tests/integration/test_events.py check."""

from __future__ import annotations

from typing import Protocol

from mesh.events._model import Backlog, Event, Handler

__all__ = ["EventBus", "Subscription"]


class Subscription(Protocol):
    """A running subscription: its handler is called for each event until `aclose()`."""

    async def aclose(self) -> None:
        """Stop delivering. The consumer stays: subscribing again with its name goes on
        with the events it has not acknowledged. An event being handled is let finish
        (and acknowledged if it succeeds); one received but not handled yet is handed
        back to the broker, to be delivered again at once."""
        ...


class EventBus(Protocol):
    """Publish events to topics; consume them through durable, named consumers.

    Delivery is at least once, so a handler must be idempotent (by `Event.id`). Each
    consumer of a topic gets every event published to it, one at a time and in the
    order the broker stored them, whichever of the consumer's subscriptions (a
    service's instances, say) handles each.
    """

    async def publish(self, topic: str, event: Event) -> None:
        """Store `event` in `topic`; returns once the broker has acknowledged it (it is
        then stored, and every consumer of the topic will get it). Publishing an event
        again (same id) is safe: consumers get it once, if the broker still remembers
        the id (NATS: for its dedupe window), and at least once in any case.

        Raises:
            BrokerUnavailable: the broker did not acknowledge it within a bounded time
                (it may still have stored it); publish it again later.
            ValueError: `topic` is not a topic name.
        """
        ...

    async def subscribe(self, topic: str, consumer: str, handler: Handler) -> Subscription:
        """Have `handler` called with each event of `topic` that `consumer` has not
        acknowledged yet, from the first event the topic stored, one at a time and in
        order. An event whose handler returns is acknowledged; one whose handler raises
        is delivered again after a backoff, before any later event. Subscriptions with
        the same `consumer` share its events (each goes to one of them).

        Raises:
            BrokerUnavailable: the consumer could not be set up.
            ValueError: `topic` or `consumer` is not a valid name.
        """
        ...

    async def history(self, topic: str | None = None) -> list[Event]:
        """Every event the broker stores for `topic` (for every topic if None), in the
        order it stored them: what a projection is rebuilt from, and what `meshctl
        events` shows. Events published while it reads may or may not be in it.

        Raises:
            BrokerUnavailable: the broker did not answer.
            ValueError: `topic` is not a topic name.
        """
        ...

    async def backlog(self, topic: str, consumer: str) -> Backlog:
        """How far `consumer` is behind on `topic` (all of it, if the consumer has
        never subscribed).

        Raises:
            BrokerUnavailable: the broker did not answer.
            ValueError: `topic` or `consumer` is not a valid name.
        """
        ...

    async def aclose(self) -> None:
        """Close every subscription (see Subscription.aclose), then the connection."""
        ...
