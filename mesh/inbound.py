"""The inbound call being served, and what the calls it makes downstream inherit from
it: its deadline and its trace ids.

The server records each call it admits here, with one context-variable write (grpc.aio
serves each call in a task of its own; tasks the handler starts copy the variable).
Everything else is read or made only when something needs it: the mesh client asks for
the time left when it calls downstream, and an untraced call's trace ids are drawn the
first time a log line or a downstream call asks for them. The ids live on the record,
which every copy shares, so they are drawn once per call.
"""

from __future__ import annotations

import random
from contextvars import ContextVar
from typing import Protocol, TypeAlias

__all__ = ["Deadline", "TraceIds", "enter", "remaining", "trace_ids"]

TraceIds: TypeAlias = tuple[int, int]
"""(trace id, span id) as OpenTelemetry numbers them."""


class Deadline(Protocol):
    """Anything that knows its time left, such as a grpc ServicerContext."""

    def time_remaining(self) -> float | None: ...


class _Call:
    """The call being served. Every task started while serving it shares this one
    object, so trace ids drawn in one are seen by all."""

    __slots__ = ("deadline", "trace_ids")

    def __init__(self, deadline: Deadline, trace_ids: TraceIds | None) -> None:
        self.deadline = deadline
        self.trace_ids = trace_ids  # None until drawn


_current: ContextVar[_Call | None] = ContextVar("shopmesh_inbound", default=None)


def enter(call: Deadline, trace_ids: TraceIds | None = None) -> None:
    """The server, as it admits a call: calls made from here on get at most what `call`
    has left, and carry `trace_ids` (else ids drawn when first asked for)."""
    _current.set(_Call(call, trace_ids))


def remaining() -> float | None:
    """Seconds left before the inherited deadline, or None if there is none."""
    call = _current.get()
    return None if call is None else call.deadline.time_remaining()


def trace_ids() -> TraceIds | None:
    """The trace ids of the call being served (its caller's, or drawn now, once per
    call), or None outside a call."""
    call = _current.get()
    if call is None:
        return None
    if call.trace_ids is None:
        # Non-zero, as W3C requires; random's generator, as OpenTelemetry's own ids.
        call.trace_ids = (random.getrandbits(128) or 1, random.getrandbits(64) or 1)
    return call.trace_ids
