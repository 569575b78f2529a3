"""The mesh client: a balanced, resilient mTLS channel to any service, by name."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence

import grpc

from mesh.client._channel import ServiceChannel
from mesh.config import ClientPolicy
from mesh.identity import SpiffeId
from mesh.registry import Endpoint, EndpointSource
from mesh.telemetry import ClientMetrics

__all__ = ["MeshClient"]

_CHANNEL_OPTIONS = (
    # Registry changes, not connection backoff, decide where calls go: reconnect fast.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


class MeshClient:
    """Hands out one ServiceChannel per service; generated stubs take it as a channel:

        inventory = InventoryServiceStub(client.channel("inventory"))
        await inventory.GetStock(GetStockRequest(product_id="sku-1"))

    Every endpoint channel uses `credentials` (this process's identity) and runs
    `interceptors` (tracing) on each attempt. An endpoint of service S must present the
    certificate of `identity_of(S)`, whatever the registry says: an instance that
    registers under another service's name fails the TLS handshake.
    """

    def __init__(
        self,
        source: EndpointSource,
        credentials: grpc.ChannelCredentials,
        policy: ClientPolicy,
        *,
        identity_of: Callable[[str], SpiffeId],
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        metrics: ClientMetrics | None = None,
    ) -> None:
        self._source = source
        self._credentials = credentials
        self._policy = policy
        self._identity_of = identity_of
        self._interceptors = list(interceptors)
        self._metrics = metrics
        self._channels: dict[str, ServiceChannel] = {}

    def _dial(self, service: str, endpoint: Endpoint) -> grpc.aio.Channel:
        # The service called, not the one the registry entry names: that is written by
        # the instance itself.
        expected = self._identity_of(service).dns_name
        return grpc.aio.secure_channel(
            endpoint.address,
            self._credentials,
            options=(
                *_CHANNEL_OPTIONS,
                # NOTE: despite its name, grpc uses this as the least time it gives one
                # connection attempt (TCP and TLS handshake), not as a backoff.
                ("grpc.min_reconnect_backoff_ms", round(self._policy.connect_timeout * 1000)),
                ("grpc.ssl_target_name_override", expected),
            ),
            interceptors=self._interceptors,
        )

    def channel(self, service: str) -> ServiceChannel:
        """The channel to `service`; it starts following its endpoints on first use."""
        channel = self._channels.get(service)
        if channel is None:
            channel = ServiceChannel(
                service,
                self._source,
                functools.partial(self._dial, service),
                self._policy,
                metrics=self._metrics,
            )
            self._channels[service] = channel
        return channel

    async def aclose(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(channel.close() for channel in channels))

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
