"""OpenTelemetry tracing: spans go to OTLP when an endpoint is given, else to a
JSON-lines file per process (one span per line), which tests and people can read."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import format_span_id, format_trace_id

__all__ = ["JsonLinesSpanExporter", "span_to_dict", "tracer_provider"]


def span_to_dict(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "trace_id": format_trace_id(context.trace_id),
        "span_id": format_span_id(context.span_id),
        "parent_span_id": format_span_id(span.parent.span_id) if span.parent else None,
        "kind": span.kind.name,
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "service": span.resource.attributes.get("service.name"),
        "instance": span.resource.attributes.get("service.instance.id"),
        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
    }


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON object per line to `path`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(span)) + "\n" for span in spans)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def tracer_provider(
    *,
    service: str,
    instance_id: str,
    otlp_endpoint: str | None,
    trace_file: Path | None,
    flush_interval: float = 1.0,
) -> TracerProvider:
    """A provider for one process. A span follows its parent's sampling decision; a
    root span is always recorded, because the HeadSampler has already chosen which
    inbound calls start traces (sampling again here would square the ratio)."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": instance_id}),
        sampler=ParentBased(ALWAYS_ON),
    )
    exporter: SpanExporter | None = None
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
    elif trace_file is not None:
        exporter = JsonLinesSpanExporter(trace_file)
    if exporter is not None:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=int(flush_interval * 1000))
        )
    return provider
