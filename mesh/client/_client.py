"""The mesh client: a channel to any service, by name, through the configured data plane."""

from __future__ import annotations

import asyncio

from mesh.client._dataplane import DataPlane, StubChannel

__all__ = ["MeshClient"]


class MeshClient:
    """Hands out one channel per service; generated stubs take it as a channel:

        inventory = InventoryServiceStub(client.channel("inventory"))
        await inventory.GetStock(GetStockRequest(product_id="sku-1"))

    What the channel does (balancing, retries, mTLS, a sidecar) is the `dataplane`'s
    business (mesh.client.data_plane picks it from mesh.yaml): no caller changes when
    the data plane does.
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane
        self._channels: dict[str, StubChannel] = {}

    def channel(self, service: str) -> StubChannel:
        """The channel to `service`; it starts following its endpoints on first use."""
        channel = self._channels.get(service)
        if channel is None:
            channel = self._channels[service] = self._dataplane.open(service)
        return channel

    async def aclose(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
