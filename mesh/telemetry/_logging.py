"""JSON logs, one object per line, carrying the current trace and span ids.

They go to stdout, kept apart from stderr, where whatever else runs in the process
writes free text (gRPC core, tracebacks): the supervisor copies stdout's lines into
the instance's log as they are and wraps each stderr line into a JSON object."""

from __future__ import annotations

import json
import logging
import sys
import time

from opentelemetry.trace import format_span_id, format_trace_id

from mesh.telemetry._sampling import current_trace_ids

__all__ = ["JsonFormatter", "configure_logging"]

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, **static: str) -> None:
        super().__init__()
        self._static = static

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
        }
        ids = current_trace_ids()
        if ids is not None:
            entry["trace_id"] = format_trace_id(ids[0])
            entry["span_id"] = format_span_id(ids[1])
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, **static: str) -> None:
    """Send every log record to stdout as JSON, tagged with `static` fields."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(**static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
