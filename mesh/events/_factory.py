"""The bus a mesh.yaml asks for: its adapter by `events.broker`, connected to the
broker mesh.yaml names or, for NATS, else the one `meshctl up` runs from the same
folder (`meshctl up` embeds NATS only: RabbitMQ is always one mesh.yaml names)."""

from __future__ import annotations

from mesh.config import MeshConfig
from mesh.errors import BrokerUnavailable, ConfigError
from mesh.events._bus import EventBus
from mesh.events._nats import NatsEventBus
from mesh.events._rabbitmq import RabbitMqEventBus
from mesh.state import events_endpoint

__all__ = ["event_bus"]


async def event_bus(config: MeshConfig, *, endpoint: str | None = None) -> EventBus:
    """A connected EventBus for the mesh of `config`, on `endpoint` if given.

    Raises:
        ConfigError: `events.broker` is rabbitmq and no endpoint is given (in mesh.yaml
            or as `endpoint`): there is no embedded RabbitMQ to fall back on.
        BrokerUnavailable: no broker is known (none in mesh.yaml, no `meshctl up`
            running here), or the one known does not answer.
    """
    name = f"shopmesh {config.namespace}"
    if config.events.broker == "rabbitmq":
        named = endpoint or config.events.endpoint
        if not named:
            raise ConfigError(
                "events.endpoint",
                "broker rabbitmq needs the host:port or amqp:// URL of a running RabbitMQ "
                "(meshctl up embeds only NATS)",
            )
        return await RabbitMqEventBus.connect(named, name=name)
    address = endpoint or events_endpoint(config)
    if address is None:
        raise BrokerUnavailable(
            "no event broker: set events.endpoint in mesh.yaml, or start one with `meshctl up`"
        )
    return await NatsEventBus.connect(address, name=name)
