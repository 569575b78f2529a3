"""Head sampling at the server's edge: whether an inbound call is traced, decided once.

The caller's W3C `traceparent` decides when there is one (its sampled flag); a call
without one starts a trace with probability `ratio`. OpenTelemetry's grpc server
instrumentation consults this as its filter, so an unsampled call skips it entirely:
on a Python server the instrumentation costs more per call than the handler itself,
even for spans it would not record. An unsampled call still gets a (non-recording)
span context: logs carry its trace id, and downstream calls propagate "not sampled",
so a trace is kept or dropped whole.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import grpc
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

__all__ = ["UNTRACED_PREFIXES", "HeadSampler", "parse_traceparent"]

_NOT_SAMPLED = TraceFlags(0)
_SPAN_ID_MASK = (1 << 64) - 1

UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
"""Methods never traced: health checks and reflection are infrastructure chatter."""


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
    """Call it with a call's HandlerCallDetails: True means "trace it".

    Returning False also attaches a non-recording span context to the current
    context, which is the inbound call's own (grpc.aio runs interception and the
    handler in one task).
    """

    def __init__(self, ratio: float, rng: random.Random | None = None) -> None:
        self._ratio = ratio
        self._rng = rng or random.Random()

    def __call__(self, details: grpc.HandlerCallDetails) -> bool:
        if details.method.startswith(UNTRACED_PREFIXES):
            return False
        header = _traceparent(details.invocation_metadata)
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
        unsampled = SpanContext(trace_id, span_id, is_remote=True, trace_flags=_NOT_SAMPLED)
        # The inbound call's context is empty so far: start from an empty one, not a copy.
        context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled), Context()))
        return False
