"""Data planes: how the mesh client reaches a service. Callers only ever ask
`MeshClient.channel(service)`; the data plane that `mesh.dataplane` names decides what
that channel is.

- "direct" (DirectDataPlane): proxyless. A ServiceChannel per service follows the
  service's endpoints in etcd, balances on this side (by version weight, then
  round-robin), and calls each endpoint over mTLS with this process's own certificate.
  Of each service's `policy:` in mesh.yaml it applies what a client can: the timeout,
  retries and retry budget (see `service_policy` for how they combine with `client:`)
  and the version weights (the live split in etcd wins over the declared one).
- "sidecar" (SidecarDataPlane, mesh.client._sidecar): every call goes to the
  instance's own Envoy, which does all of that.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import grpc

from mesh.client._budget import RetryBudgetMeter
from mesh.client._channel import ServiceChannel
from mesh.client._sidecar import SidecarDataPlane
from mesh.client._weights import service_weights
from mesh.config import ClientPolicy, MeshConfig, RetryBudget, TrafficPolicy
from mesh.identity import IdentityFiles, SpiffeId, channel_credentials
from mesh.registry import Endpoint, EndpointSource
from mesh.telemetry import ClientMetrics

__all__ = [
    "DataPlane",
    "DirectDataPlane",
    "LiveWeights",
    "StubChannel",
    "data_plane",
    "service_policy",
]

LiveWeights = Callable[[str], Mapping[str, int] | None]
"""A service's live version weights (`meshctl traffic`, in etcd), or None (or empty)
while it has none; looked up on every call, so it must be cheap (a dict look-up)."""

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


def service_policy(client: ClientPolicy, traffic: TrafficPolicy | None) -> ClientPolicy:
    """The ClientPolicy of the proxyless calls to one service.

    mesh.yaml's `client:` section is the default; the service's own `policy:` overrides
    it with what it sets of `timeout`, `retries.attempts` and `retries.per_try_timeout`
    (the sidecars read the same: one declaration, both data planes). Backoff, breaker
    and connect timeout are always the `client:` section's. A service with no policy
    (`traffic` None: not in mesh.yaml) gets `client` as it is.
    """
    if traffic is None:
        return client
    retries = traffic.retries
    return dataclasses.replace(
        client,
        timeout=client.timeout if traffic.timeout is None else traffic.timeout,
        retry=dataclasses.replace(
            client.retry,
            max_attempts=client.retry.max_attempts
            if retries.attempts is None
            else retries.attempts,
            per_try_timeout=(
                client.retry.per_try_timeout
                if retries.per_try_timeout is None
                else retries.per_try_timeout
            ),
        ),
    )


class DirectDataPlane:
    """Proxyless: a ServiceChannel per service over `source`'s endpoints.

    Every endpoint channel uses `credentials` (this process's identity) and runs
    `interceptors` (tracing) on each attempt. An endpoint of service S must present the
    certificate of `identity_of(S)`, whatever the registry says: an instance that
    registers under another service's name fails the TLS handshake.

    Calls to a service in `traffic` (its `policy:` from mesh.yaml) follow
    `service_policy(policy, traffic[S])` and its retry budget; calls to any other
    service follow `policy` with RetryBudget's defaults. A service's calls split over its
    versions by `weights(S)` (live) when that gives a split, else by its declared
    `policy.weights`; with neither, every endpoint gets an equal share.
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
        traffic: Mapping[str, TrafficPolicy] | None = None,
        weights: LiveWeights | None = None,
    ) -> None:
        self._source = source
        self._credentials = credentials
        self._policy = policy
        self._identity_of = identity_of
        self._interceptors = list(interceptors)
        self._metrics = metrics
        self._traffic = dict(traffic or {})
        self._live_weights = weights

    def open(self, service: str) -> ServiceChannel:
        traffic = self._traffic.get(service)
        live = self._live_weights
        return ServiceChannel(
            service,
            self._source,
            functools.partial(self._dial, service),
            service_policy(self._policy, traffic),
            metrics=self._metrics,
            weights=service_weights(
                traffic.weights if traffic is not None else None,
                functools.partial(live, service) if live is not None else None,
            ),
            retry_budget=RetryBudgetMeter(
                traffic.retries.budget if traffic is not None else RetryBudget()
            ),
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
    outbound_socket: str | None = None,
    weights: LiveWeights | None = None,
) -> DataPlane:
    """The data plane `config.dataplane` names, for the process whose certificate is
    `identity`; `source` gives the endpoints of each service (from etcd),
    `outbound_socket` its sidecar's socket (the sidecar plane needs it), and `weights`
    each service's live version weights (the direct plane follows them; a sidecar's
    Envoy gets them from the control plane)."""
    if config.dataplane == "sidecar":
        if outbound_socket is None:
            raise ValueError("the sidecar data plane needs the sidecar's outbound socket")
        return SidecarDataPlane(
            outbound_socket,
            default_timeout=config.client.timeout,
            timeouts={
                name: spec.policy.timeout
                for name, spec in config.services.items()
                if spec.policy.timeout is not None
            },
            interceptors=interceptors,
        )
    if config.dataplane == "direct":
        return DirectDataPlane(
            source,
            channel_credentials(identity),
            config.client,
            identity_of=functools.partial(SpiffeId, config.trust_domain, config.namespace),
            interceptors=interceptors,
            metrics=metrics,
            traffic={name: spec.policy for name, spec in config.services.items()},
            weights=weights,
        )
    raise ValueError(f"no data plane {config.dataplane!r}")  # config validation names them
