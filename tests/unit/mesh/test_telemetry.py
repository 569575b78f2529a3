"""mesh.telemetry: Go code names, method splitting, the JSON-lines span exporter and
JSON log records tagged with the current trace."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

from mesh.telemetry import (
    JsonFormatter,
    JsonLinesSpanExporter,
    go_code_name,
    grpc_type,
    split_method,
)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (grpc.StatusCode.OK, "OK"),
        (grpc.StatusCode.UNKNOWN, "Unknown"),
        (grpc.StatusCode.NOT_FOUND, "NotFound"),
        (grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded"),
        (grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "ResourceExhausted"),
        (grpc.StatusCode.FAILED_PRECONDITION, "FailedPrecondition"),
        (grpc.StatusCode.OUT_OF_RANGE, "OutOfRange"),
        (grpc.StatusCode.UNAVAILABLE, "Unavailable"),
        (grpc.StatusCode.DATA_LOSS, "DataLoss"),
        (grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated"),
    ],
)
def test_go_code_names_match_grpc_go(code: grpc.StatusCode, name: str) -> None:
    assert go_code_name(code) == name


def test_go_code_name_of_cancelled_is_gos_spelling() -> None:
    assert go_code_name(grpc.StatusCode.CANCELLED) == "Canceled"


@pytest.mark.parametrize(
    ("full", "parts"),
    [
        (
            "/shop.inventory.v1.InventoryService/GetStock",
            ("shop.inventory.v1.InventoryService", "GetStock"),
        ),
        ("grpc.health.v1.Health/Check", ("grpc.health.v1.Health", "Check")),
        ("/justservice", ("justservice", "")),
    ],
)
def test_split_method(full: str, parts: tuple[str, str]) -> None:
    assert split_method(full) == parts


@pytest.mark.parametrize(
    ("request_streaming", "response_streaming", "kind"),
    [
        (False, False, "unary"),
        (False, True, "server_stream"),
        (True, False, "client_stream"),
        (True, True, "bidi_stream"),
    ],
)
def test_grpc_type(request_streaming: bool, response_streaming: bool, kind: str) -> None:
    assert grpc_type(request_streaming, response_streaming) == kind


# -- spans -----------------------------------------------------------------------------------


def test_span_exporter_writes_one_json_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "instance-1.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")

    with (
        tracer.start_as_current_span("outer") as outer,
        tracer.start_as_current_span("inner", attributes={"items": ("a", "b")}) as inner,
    ):
        pass
    provider.shutdown()

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    spans = {entry["name"]: entry for entry in map(json.loads, lines)}
    outer_ctx, inner_ctx = outer.get_span_context(), inner.get_span_context()
    assert spans["outer"]["trace_id"] == format_trace_id(outer_ctx.trace_id)
    assert spans["inner"]["trace_id"] == spans["outer"]["trace_id"]
    assert spans["outer"]["span_id"] == format_span_id(outer_ctx.span_id)
    assert spans["inner"]["span_id"] == format_span_id(inner_ctx.span_id)
    assert spans["inner"]["parent_span_id"] == spans["outer"]["span_id"]
    assert spans["outer"]["parent_span_id"] is None
    assert spans["inner"]["attributes"] == {"items": ["a", "b"]}


def test_span_exporter_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text('{"name": "earlier"}\n')
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))

    with provider.get_tracer("test").start_as_current_span("later"):
        pass
    provider.shutdown()

    names = [json.loads(line)["name"] for line in path.read_text().splitlines()]
    assert names == ["earlier", "later"]


# -- logs ------------------------------------------------------------------------------------


@pytest.fixture
def tracer_provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": "mesh.test",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": message,
            "args": args,
            **extra,
        }
    )


def test_json_formatter_outside_a_span_has_no_trace_ids() -> None:
    entry = json.loads(JsonFormatter(service="inventory").format(record("hello %s", "world")))

    assert entry["message"] == "hello world"
    assert entry["level"] == "warning"
    assert entry["logger"] == "mesh.test"
    assert entry["service"] == "inventory"
    assert entry["time"].endswith("Z")
    assert "trace_id" not in entry
    assert "span_id" not in entry


def test_json_formatter_inside_a_span_carries_its_ids(tracer_provider: TracerProvider) -> None:
    with tracer_provider.get_tracer("test").start_as_current_span("work") as span:
        line = JsonFormatter().format(record())

    entry = json.loads(line)
    context = span.get_span_context()
    assert entry["trace_id"] == format_trace_id(context.trace_id)
    assert entry["span_id"] == format_span_id(context.span_id)


def test_json_formatter_adds_extra_fields() -> None:
    entry = json.loads(JsonFormatter().format(record(order_id="o-1", attempt=2, path=Path("/x"))))

    assert entry["order_id"] == "o-1"
    assert entry["attempt"] == 2
    assert entry["path"] == "/x"
    assert "msg" not in entry
    assert "args" not in entry


def test_json_formatter_includes_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = JsonFormatter().format(record(exc_info=sys.exc_info()))

    assert "ValueError" in json.loads(line)["exception"]
