"""Metrics, traces and logs every ShopMesh process shares."""

from mesh.telemetry._logging import JsonFormatter, configure_logging
from mesh.telemetry._metrics import (
    ClientMetrics,
    MethodMetrics,
    MetricsServer,
    ServerMetrics,
    go_code_name,
    grpc_type,
    split_method,
)
from mesh.telemetry._sampling import (
    HeadSampler,
    activate_unsampled,
    current_trace_ids,
    parse_traceparent,
)
from mesh.telemetry._tracing import JsonLinesSpanExporter, span_to_dict, tracer_provider

__all__ = [
    "ClientMetrics",
    "HeadSampler",
    "JsonFormatter",
    "JsonLinesSpanExporter",
    "MethodMetrics",
    "MetricsServer",
    "ServerMetrics",
    "activate_unsampled",
    "configure_logging",
    "current_trace_ids",
    "go_code_name",
    "grpc_type",
    "parse_traceparent",
    "span_to_dict",
    "split_method",
    "tracer_provider",
]
