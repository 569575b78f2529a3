"""Head sampling: which inbound calls start or continue a trace, decided once."""

from __future__ import annotations

import contextvars
import random

import pytest
from opentelemetry import trace

from mesh import inbound
from mesh.telemetry import HeadSampler, activate_unsampled, current_trace_ids, parse_traceparent
from tests.harness.inprocess import Details

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class NoDeadline:
    def time_remaining(self) -> float | None:
        return None


def serve(sampler: HeadSampler, details: Details) -> bool:
    """What the server does with the decision: whether the call is traced; if it is
    not, the call is recorded with the trace it belongs to."""
    found = sampler.decide(details.invocation_metadata) if sampler.covers(details.method) else None
    if found is True:
        return True
    inbound.enter(NoDeadline(), found)
    return False


def decide(sampler: HeadSampler, details: Details) -> tuple[bool, trace.SpanContext]:
    """The decision, and the span context an outgoing call then carries (in a fresh
    context, as grpc gives each inbound call)."""

    def run() -> tuple[bool, trace.SpanContext]:
        traced = serve(sampler, details)
        if not traced:
            activate_unsampled()  # what the mesh client does before an outgoing call
        return traced, trace.get_current_span().get_span_context()

    return contextvars.Context().run(run)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (int(TRACE, 16), int(PARENT, 16), True)),
        (f"00-{TRACE}-{PARENT}-00", (int(TRACE, 16), int(PARENT, 16), False)),
        (f" 00-{TRACE}-{PARENT}-03 ", (int(TRACE, 16), int(PARENT, 16), True)),
        (f"01-{TRACE}-{PARENT}-01", None),  # unknown version
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),  # all-zero trace id is invalid
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE}-{PARENT}-zz", None),
        ("garbage", None),
    ],
)
def test_parse_traceparent(header: str, expected: tuple[int, int, bool] | None) -> None:
    assert parse_traceparent(header) == expected


def test_a_sampled_caller_is_traced_whatever_the_ratio() -> None:
    sampler = HeadSampler(0.0)
    traced, _ = decide(sampler, Details("/pkg.S/M", [("traceparent", f"00-{TRACE}-{PARENT}-01")]))
    assert traced


def test_an_unsampled_caller_is_not_traced_but_keeps_its_trace_id() -> None:
    sampler = HeadSampler(1.0)
    traced, span = decide(
        sampler, Details("/pkg.S/M", [("traceparent", f"00-{TRACE}-{PARENT}-00")])
    )
    assert not traced
    assert span.trace_id == int(TRACE, 16)
    assert span.span_id == int(PARENT, 16)
    assert not span.trace_flags.sampled  # downstream calls propagate "not sampled"


def test_calls_without_a_caller_trace_are_sampled_at_the_ratio() -> None:
    sampler = HeadSampler(0.25, random.Random(7))
    decisions = [decide(sampler, Details("/pkg.S/M"))[0] for _ in range(4000)]
    assert 0.22 < sum(decisions) / len(decisions) < 0.28


def test_unsampled_roots_get_distinct_unsampled_trace_ids() -> None:
    sampler = HeadSampler(0.0, random.Random(1))
    spans = [decide(sampler, Details("/pkg.S/M"))[1] for _ in range(50)]
    assert all(span.is_valid and not span.trace_flags.sampled for span in spans)
    assert len({span.trace_id for span in spans}) == 50


@pytest.mark.parametrize(
    "method",
    [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_health_and_reflection_are_never_traced(method: str) -> None:
    assert not HeadSampler.covers(method)
    assert HeadSampler.covers("/shop.product.v1.ProductService/GetProduct")


def test_a_malformed_traceparent_counts_as_none() -> None:
    always, never = HeadSampler(1.0), HeadSampler(0.0)
    header = [("traceparent", "00-nonsense")]
    assert decide(always, Details("/pkg.S/M", header))[0]
    traced, span = decide(never, Details("/pkg.S/M", header))
    assert not traced
    assert span.is_valid  # a fresh trace id for the logs


def test_the_ids_of_an_untraced_call_are_known_before_any_span_context_is_built() -> None:
    sampler = HeadSampler(1.0)

    def run() -> tuple[tuple[int, int] | None, bool]:
        serve(sampler, Details("/pkg.S/M", [("traceparent", f"00-{TRACE}-{PARENT}-00")]))
        return current_trace_ids(), trace.get_current_span().get_span_context().is_valid

    ids, built = contextvars.Context().run(run)
    assert ids == (int(TRACE, 16), int(PARENT, 16))  # what log lines carry
    assert not built  # OpenTelemetry's context is made only for an outgoing call


def test_activation_leaves_a_recording_span_alone() -> None:
    sampler = HeadSampler(0.0)
    real = trace.SpanContext(int(TRACE, 16), int(PARENT, 16), is_remote=False)

    def run() -> trace.SpanContext:
        serve(sampler, Details("/pkg.S/M"))
        with trace.use_span(trace.NonRecordingSpan(real)):
            activate_unsampled()
            return trace.get_current_span().get_span_context()

    assert contextvars.Context().run(run) == real
