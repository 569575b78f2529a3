"""The sidecar data plane: every call goes to this instance's own Envoy, over a Unix
socket only this user can open, with the service's name as its authority. Envoy picks
the endpoint, retries, ejects outliers and opens mTLS upstream with this instance's
certificate; the app only sets what Envoy cannot know: the deadline it inherits, and
whether the method's proto declares it safe to repeat (`x-shopmesh-idempotent`, which
selects Envoy's retrying route and is removed before the call leaves the sidecar).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from mesh import inbound
from mesh.client._channel import is_idempotent
from mesh.envoy import IDEMPOTENT_HEADER

__all__ = ["SidecarChannel", "SidecarDataPlane"]

Metadata = Sequence[tuple[str, str | bytes]]


class _Call:
    """One method's multicallable: the inherited deadline and the idempotency mark
    added to each call."""

    def __init__(self, inner: Any, default_timeout: float, idempotent: bool) -> None:
        self._inner = inner
        self._default = default_timeout
        self._extra: tuple[tuple[str, str], ...] = ((IDEMPOTENT_HEADER, "1"),) if idempotent else ()

    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Metadata | None = None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        inherited = inbound.remaining()
        budgets = [b for b in (timeout, inherited) if b is not None]
        # While the sidecar restarts, its socket is gone for a moment: wait for it
        # (within the deadline) rather than fail a call that never left the instance.
        kwargs.setdefault("wait_for_ready", True)
        return self._inner(
            request,
            timeout=min(budgets) if budgets else self._default,
            metadata=(*(metadata or ()), *self._extra),
            **kwargs,
        )


class SidecarChannel:
    """A StubChannel to one service through the sidecar."""

    def __init__(self, channel: grpc.aio.Channel, default_timeout: float) -> None:
        self._channel = channel
        self._default = default_timeout

    def _wrap(self, factory: Callable[..., Any], method: str, *args: Any, **kwargs: Any) -> _Call:
        return _Call(factory(method, *args, **kwargs), self._default, is_idempotent(method))

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Call:
        return self._wrap(self._channel.unary_unary, method, *args, **kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Call:
        return self._wrap(self._channel.unary_stream, method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _Call:
        return self._wrap(self._channel.stream_unary, method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _Call:
        return self._wrap(self._channel.stream_stream, method, *args, **kwargs)

    async def close(self) -> None:
        await self._channel.close()


class SidecarDataPlane:
    """Opens a channel per service to the sidecar's outbound socket at `socket_path`.

    `timeouts` holds each service's declared call timeout (`policy.timeout`), others
    get `default_timeout`; `interceptors` (tracing) run on every call.
    """

    def __init__(
        self,
        socket_path: str,
        *,
        default_timeout: float,
        timeouts: Mapping[str, float] | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._target = f"unix:{socket_path}"
        self._default = default_timeout
        self._timeouts = dict(timeouts or {})
        self._interceptors = list(interceptors)

    def open(self, service: str) -> SidecarChannel:
        channel = grpc.aio.insecure_channel(
            self._target,
            options=(
                ("grpc.default_authority", service),  # Envoy routes on it
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1_000),
            ),
            interceptors=self._interceptors,
        )
        return SidecarChannel(channel, self._timeouts.get(service, self._default))
