"""Head sampling at the server's edge: whether an inbound call is traced, decided once.

The caller's W3C `traceparent` decides when there is one (its sampled flag); a call
without one starts a trace with probability `ratio`. The server hands only traced
calls to OpenTelemetry's grpc instrumentation: on a Python server it costs more per
call than the handler itself, even for spans it would not record.

An untraced call still belongs to a trace (its caller's, or one of its own), so that its
log lines can be correlated and downstream calls propagate "not sampled" and keep the
trace whole. Drawing ids and building OpenTelemetry's span context for it are costly,
so both wait until something needs them (mesh.inbound keeps the call's ids): an
outgoing call (`activate_unsampled`) or a log line (`current_trace_ids`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Literal

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mesh import inbound
from mesh.inbound import TraceIds

__all__ = [
    "TRACEPARENT",
    "HeadSampler",
    "activate_unsampled",
    "current_trace_ids",
    "parse_traceparent",
]

TRACEPARENT = "traceparent"
"""The W3C header that carries a caller's trace and its sampling decision."""

_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_NOT_SAMPLED = TraceFlags(0)


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


class HeadSampler:
    """Decides, per inbound call, whether it is traced."""

    def __init__(self, ratio: float, rng: random.Random | None = None) -> None:
        self._ratio = ratio
        self._random = (rng or random.Random()).random

    @staticmethod
    def covers(method: str) -> bool:
        """Whether calls of `method` are ever traced: health checks and reflection are
        infrastructure chatter, never traced."""
        return not method.startswith(_UNTRACED_PREFIXES)

    def decide(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> TraceIds | Literal[True] | None:
        """True: trace the call. Otherwise it is not traced, and this is the trace it
        belongs to: its caller's (trace id, span id), or None for a trace of its own."""
        for key, value in metadata or ():
            if key == TRACEPARENT and isinstance(value, str):
                parent = parse_traceparent(value)
                if parent is not None:
                    return True if parent[2] else parent[:2]
                break  # malformed: as if there were none
        return True if self._random() < self._ratio else None  # a trace of its own


def current_trace_ids() -> TraceIds | None:
    """(trace id, span id) of the span being recorded, else of the untraced call being
    served, else None."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        return span.trace_id, span.span_id
    return inbound.trace_ids()


def activate_unsampled() -> None:
    """Before an outgoing call: if the call being served is untraced and OpenTelemetry
    has no span yet, make its span context current, so the outgoing call propagates
    its trace id as "not sampled"."""
    if trace.get_current_span().get_span_context().is_valid:
        return
    ids = inbound.trace_ids()
    if ids is None:
        return
    trace_id, span_id = ids
    unsampled = SpanContext(trace_id, span_id, is_remote=True, trace_flags=_NOT_SAMPLED)
    # The inbound call's context held nothing else: start from an empty one, not a copy.
    context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled), Context()))
