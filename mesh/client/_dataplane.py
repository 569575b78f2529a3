"""Data planes: how the mesh client reaches a service. Callers only ever ask
`MeshClient.channel(service)`; the data plane that `mesh.dataplane` names decides what
that channel is.

- "direct" (DirectDataPlane): proxyless. A ServiceChannel per service follows the
  service's endpoints in etcd, balances round-robin on this side, and calls each
  endpoint over mTLS with this process's own certificate.

The sidecar data plane (each call to the instance's own Envoy) and gRPC's `xds:///`
are further implementations of the same two-method protocol.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc

from mesh.client._channel import ServiceChannel
from mesh.config import ClientPolicy, MeshConfig
from mesh.identity import IdentityFiles, SpiffeId, channel_credentials
from mesh.registry import Endpoint, EndpointSource
from mesh.telemetry import ClientMetrics

__all__ = ["DataPlane", "DirectDataPlane", "StubChannel", "data_plane"]

_CHANNEL_OPTIONS = (
    # Registry changes, not connection backoff, decide where calls go: reconnect fast.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


class StubChannel(Protocol):
    """What generated stubs take as their channel, as grpc.aio.Channel is one: a factory
    of one callable per method and call shape, and a way to close it."""

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any: ...

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any: ...

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any: ...

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: Any = False,
    ) -> Any: ...

    async def close(self) -> None: ...


class DataPlane(Protocol):
    """Opens the channel to one service; the MeshClient keeps one per service."""

    def open(self, service: str) -> StubChannel: ...


class DirectDataPlane:
    """Proxyless: a ServiceChannel per service over `source`'s endpoints.

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

    def open(self, service: str) -> ServiceChannel:
        return ServiceChannel(
            service,
            self._source,
            functools.partial(self._dial, service),
            self._policy,
            metrics=self._metrics,
        )

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


def data_plane(
    config: MeshConfig,
    identity: IdentityFiles,
    source: EndpointSource,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    metrics: ClientMetrics | None = None,
) -> DataPlane:
    """The data plane `config.dataplane` names, for the process whose certificate is
    `identity`; `source` gives the endpoints of each service (from etcd)."""
    if config.dataplane == "direct":
        return DirectDataPlane(
            source,
            channel_credentials(identity),
            config.client,
            identity_of=functools.partial(SpiffeId, config.trust_domain, config.namespace),
            interceptors=interceptors,
            metrics=metrics,
        )
    raise ValueError(f"no data plane {config.dataplane!r}")  # config validation names them
