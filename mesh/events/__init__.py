"""The mesh's event bus: services publish domain events to topics and consume them
through durable, named consumers, at least once and in order per consumer.

`EventBus` and `Subscription` are what services program against; `event_bus(config)`
makes the one mesh.yaml's `events:` section asks for. Adapters: NATS JetStream
(`NatsEventBus`, the broker `meshctl up` embeds); RabbitMQ comes later.
"""

from mesh.errors import BrokerUnavailable
from mesh.events._bus import EventBus, Subscription
from mesh.events._factory import event_bus
from mesh.events._model import Backlog, Event, Handler
from mesh.events._nats import NatsEventBus

__all__ = [
    "Backlog",
    "BrokerUnavailable",
    "Event",
    "EventBus",
    "Handler",
    "NatsEventBus",
    "Subscription",
    "event_bus",
]
