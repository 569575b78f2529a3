"""Head sampling at the server's edge: whether an inbound call is traced, decided once.

The caller's W3C `traceparent` decides when there is one (its sampled flag); a call
without one starts a trace with probability `ratio`. The server hands only traced
calls to OpenTelemetry's grpc instrumentation: on a Python server it costs more per
call than the handler itself, even for spans it would not record.

An untraced call still belongs to a trace id (its caller's, or a fresh one), so that
its log lines can be correlated and downstream calls propagate "not sampled" and keep
the trace whole. Building OpenTelemetry's span context for it is itself costly, so
the ids are only recorded here, and the span context is made when something needs
it: an outgoing call (`activate_unsampled`) or a log line (`current_trace_ids`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from contextvars import ContextVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

__all__ = [
    "UNTRACED_PREFIXES",
    "HeadSampler",
    "activate_unsampled",
    "current_trace_ids",
    "parse_traceparent",
]

UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
"""Methods never traced: health checks and reflection are infrastructure chatter."""

_NOT_SAMPLED = TraceFlags(0)
_SPAN_ID_MASK = (1 << 64) - 1
# (trace id, span id) of the untraced call being served, if it is one.
_unsampled: ContextVar[tuple[int, int] | None] = ContextVar("shopmesh_unsampled", default=None)


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a version-00 traceparent, else None."""
    parts = value.strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(flags & TraceFlags.SAMPLED)


def _traceparent(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "traceparent" and isinstance(value, str):
            return value
    return None


class HeadSampler:
    """`decide(method, metadata)` is True for a call to trace. When it is False, the
    call's trace ids are recorded in the current context: the inbound call's own
    (grpc.aio runs a call's handler in one task; tasks it starts inherit them)."""

    def __init__(self, ratio: float, rng: random.Random | None = None) -> None:
        self._ratio = ratio
        self._rng = rng or random.Random()

    def decide(self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        if method.startswith(UNTRACED_PREFIXES):
            return False
        header = _traceparent(metadata)
        parent = parse_traceparent(header) if header else None
        if parent is not None:
            trace_id, span_id, sampled = parent
            if sampled:
                return True
        elif self._rng.random() < self._ratio:
            return True
        else:
            bits = self._rng.getrandbits(192)  # one draw for both ids
            trace_id, span_id = (bits >> 64) or 1, (bits & _SPAN_ID_MASK) or 1
        _unsampled.set((trace_id, span_id))
        return False


def current_trace_ids() -> tuple[int, int] | None:
    """(trace id, span id) of the span being recorded, else of the untraced call being
    served, else None."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return span.trace_id, span.span_id
    return _unsampled.get()


def activate_unsampled() -> None:
    """Before an outgoing call: if the call being served is untraced and OpenTelemetry
    has no span yet, make its span context current, so the outgoing call propagates
    its trace id as "not sampled"."""
    ids = _unsampled.get()
    if ids is None or trace.get_current_span().get_span_context().is_valid:
        return
    unsampled = SpanContext(ids[0], ids[1], is_remote=True, trace_flags=_NOT_SAMPLED)
    # The inbound call's context held nothing else: start from an empty one, not a copy.
    context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled), Context()))
