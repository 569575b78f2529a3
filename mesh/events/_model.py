"""What travels on the bus: an Event, and the names of topics and consumers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Backlog", "Event", "Handler", "check_consumer", "check_topic"]

# A field that travels as a message header: printable, no line breaks.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")
_TOKEN = r"[a-z0-9][a-z0-9-]{0,62}"
_TOPIC = re.compile(rf"{_TOKEN}(\.{_TOKEN}){{0,7}}")
_CONSUMER = re.compile(_TOKEN)


@dataclass(frozen=True)
class Event:
    """One domain event, as published and as a handler receives it.

    `id` is unique per event: a consumer's idempotency key (delivery is at least once),
    and the broker drops a republished id within its dedupe window. `stream` names the
    aggregate the event belongs to (e.g. "order-ord-123") and `version` is the event's
    1-based position in it: events of one stream reach each consumer in the order they
    were published. `type` is the full protobuf name of the message in `data` (e.g.
    "shop.order.v1.OrderPlaced"); `occurred_at` is epoch seconds.
    """

    id: str
    stream: str
    type: str
    data: bytes
    occurred_at: float
    version: int

    def __post_init__(self) -> None:
        for name in ("id", "stream", "type"):
            value = getattr(self, name)
            if not isinstance(value, str) or _HEADER_SAFE.fullmatch(value) is None:
                raise ValueError(f"Event.{name} must be printable ASCII, got {value!r:.48}")
        if not isinstance(self.data, bytes):
            raise ValueError(f"Event.data must be bytes, got {type(self.data).__name__}")
        if isinstance(self.occurred_at, bool) or not isinstance(self.occurred_at, int | float):
            raise ValueError(
                f"Event.occurred_at must be epoch seconds, got {self.occurred_at!r:.48}"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise ValueError(f"Event.version must be an int, got {self.version!r:.48}")
        if self.version < 1:
            raise ValueError(f"Event.version counts from 1, got {self.version}")


@dataclass(frozen=True)
class Backlog:
    """How far a consumer is behind on a topic: `events` the broker stores that it has
    not acknowledged yet, and `newest_at`, the `occurred_at` of the topic's newest event
    (None if the topic has none)."""

    events: int
    newest_at: float | None


Handler = Callable[[Event], Awaitable[None]]
"""A subscriber's handler: returning acknowledges the event; raising has it delivered
again later."""


def check_topic(topic: str) -> str:
    """`topic`, if it is 1 to 8 dot-separated tokens of lowercase letters, digits and
    '-' (e.g. "orders" or "order.placed"); else ValueError."""
    if _TOPIC.fullmatch(topic) is None:
        raise ValueError(
            f"a topic is dot-separated tokens of lowercase letters, digits, '-', got {topic!r:.48}"
        )
    return topic


def check_consumer(consumer: str) -> str:
    """`consumer`, if it is a name of lowercase letters, digits and '-' (a service's
    name, say); else ValueError."""
    if _CONSUMER.fullmatch(consumer) is None:
        raise ValueError(
            f"a consumer is named with lowercase letters, digits, '-', got {consumer!r:.48}"
        )
    return consumer
