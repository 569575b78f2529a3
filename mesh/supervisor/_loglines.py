"""An instance's output as JSON log lines, whatever the child process writes.

An instance writes its own JSON records to stdout. Its stderr carries whatever else
runs in the process: gRPC core (which quotes a TLS peer's server name verbatim, so any
network peer can put text there), Python tracebacks, native libraries. Every stderr
line is wrapped into a JSON object, never taken as JSON even if it looks like it; a
stdout line is kept as it is only if it is a JSON object, and wrapped otherwise.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping

__all__ = ["MAX_LINE", "MAX_MESSAGE", "LineSplitter", "stderr_record", "stdout_record"]

MAX_LINE = 256 * 1024
"""Bytes of one output line kept together; a longer one is cut into pieces."""
MAX_MESSAGE = 2000
"""Characters of a wrapped line's text kept in its message."""

# gRPC core's glog-style prefix: severity letter, MMDD, time, thread id, file:line].
_GRPC_LINE = re.compile(r"([EWIF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ([^\s\]]{1,200})\] ?(.*)", re.S)
_GRPC_LEVELS = {"E": "error", "W": "warning", "I": "info", "F": "critical"}


class LineSplitter:
    """Splits a byte stream into lines (without their newline), none longer than
    `max_line`: a longer line comes out in pieces."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max_line = max_line
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self._partial = (self._partial + data).split(b"\n")
        pieces = [piece for line in lines for piece in self._cut(line)]
        while len(self._partial) > self._max_line:
            pieces.append(self._partial[: self._max_line])
            self._partial = self._partial[self._max_line :]
        return pieces

    def end(self) -> list[bytes]:
        """The last line, if the stream did not end with a newline."""
        rest, self._partial = self._partial, b""
        return [rest] if rest else []

    def _cut(self, line: bytes) -> list[bytes]:
        if len(line) <= self._max_line:
            return [line]
        return [line[i : i + self._max_line] for i in range(0, len(line), self._max_line)]


def stdout_record(line: bytes, *, now: float, fields: Mapping[str, str]) -> bytes:
    """`line` itself if it is a JSON object (the instance's own log record), else it
    wrapped as one."""
    line = line.rstrip(b"\r")
    if line.startswith(b"{"):
        try:
            if isinstance(json.loads(line), dict):
                return line
        except ValueError:
            pass
    return _wrapped(_text(line), "info", "stdout", now, fields)


def stderr_record(line: bytes, *, now: float, fields: Mapping[str, str]) -> bytes:
    """`line` wrapped as a JSON object: a gRPC core line gets its level from its prefix
    letter and the logger "grpc", any other the level "error" and the logger "stderr"."""
    text = _text(line.rstrip(b"\r"))
    match = _GRPC_LINE.fullmatch(text)
    if match is None:
        return _wrapped(text, "error", "stderr", now, fields)
    letter, source, message = match.groups()
    return _wrapped(message, _GRPC_LEVELS[letter], "grpc", now, {**fields, "source": source})


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def _wrapped(message: str, level: str, logger: str, now: float, fields: Mapping[str, str]) -> bytes:
    entry: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1000):03d}Z",
        "level": level,
        "logger": logger,
        "message": message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…",
    }
    if len(message) > MAX_MESSAGE:
        entry["truncated"] = len(message)  # the text's length before the cut
    for key, value in fields.items():
        entry.setdefault(key, value)
    return json.dumps(entry).encode()
