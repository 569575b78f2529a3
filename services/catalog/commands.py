"""The catalog's one command: rebuild the read model from the broker's log. (The
read model's other writes are the events it applies, services.common.projection.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mesh.events import EventBus
from services.common.projection import Projection, rebuild_projection

__all__ = ["CatalogCommands"]


class CatalogCommands:
    """Commands on the read model; `bus` gives the mesh's event bus."""

    def __init__(self, projection: Projection, bus: Callable[[], Awaitable[EventBus]]) -> None:
        self._projection = projection
        self._bus = bus

    async def rebuild(self) -> int:
        """Build the read model again from every event of its topics; the number of
        events replayed.

        Raises:
            DependencyFailed: UNAVAILABLE, the event broker did not answer (the read
                model is unchanged).
        """
        return await rebuild_projection(self._projection, self._bus)
