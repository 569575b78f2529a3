"""The mesh's event bus: services publish domain events to topics and consume them
through durable, named consumers, at least once and in order per consumer.

`EventBus` and `Subscription` are what services program against; `event_bus(config)`
makes the one mesh.yaml's `events:` section asks for. Adapters: NATS JetStream
(`NatsEventBus`, the broker `meshctl up` embeds) and RabbitMQ streams
(`RabbitMqEventBus`, on a broker mesh.yaml names: `meshctl up` does not embed one).
"""

from mesh.errors import BrokerUnavailable
from mesh.events._bus import EventBus, Subscription
from mesh.events._factory import event_bus
from mesh.events._model import Backlog, Event, Handler
from mesh.events._nats import NatsEventBus
from mesh.events._rabbitmq import RabbitMqEventBus

__all__ = [
    "Backlog",
    "BrokerUnavailable",
    "Event",
    "EventBus",
    "Handler",
    "NatsEventBus",
    "RabbitMqEventBus",
    "Subscription",
    "event_bus",
]
