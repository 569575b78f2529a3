"""The command side: what changes the read model on request (the projection itself
changes it as events arrive). Who may ask is the servicer's question."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mesh.events import EventBus
from services.common.projection import Projection, rebuild_projection

__all__ = ["ProfileCommands"]


class ProfileCommands:
    """Changes to the read model of `projection`; `bus` gives the mesh's event bus."""

    def __init__(self, projection: Projection, bus: Callable[[], Awaitable[EventBus]]) -> None:
        self._projection = projection
        self._bus = bus

    async def rebuild(self) -> int:
        """Build the read model again from the broker's log; the events applied.

        Raises:
            DependencyFailed: UNAVAILABLE, the broker does not answer; the read model is unchanged.
        """
        return await rebuild_projection(self._projection, self._bus)
