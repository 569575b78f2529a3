"""The bus a mesh.yaml asks for: its adapter by `events.broker`, connected to the
broker mesh.yaml names or, else, the one `meshctl up` runs from the same folder."""

from __future__ import annotations

from mesh.config import MeshConfig
from mesh.errors import BrokerUnavailable, ConfigError
from mesh.events._bus import EventBus
from mesh.events._nats import NatsEventBus
from mesh.state import events_endpoint

__all__ = ["event_bus"]


async def event_bus(config: MeshConfig, *, endpoint: str | None = None) -> EventBus:
    """A connected EventBus for the mesh of `config`, on `endpoint` if given.

    Raises:
        ConfigError: `events.broker` names an adapter this version does not have.
        BrokerUnavailable: no broker is known (none in mesh.yaml, no `meshctl up`
            running here), or the one known does not answer.
    """
    broker = config.events.broker
    if broker == "rabbitmq":
        raise ConfigError("events.broker", "rabbitmq: the adapter is not built yet; use nats")
    address = endpoint or events_endpoint(config)
    if address is None:
        raise BrokerUnavailable(
            "no event broker: set events.endpoint in mesh.yaml, or start one with `meshctl up`"
        )
    return await NatsEventBus.connect(address, name=f"shopmesh {config.namespace}")
