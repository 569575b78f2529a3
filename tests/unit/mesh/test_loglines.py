"""An instance's output as JSON lines (mesh.supervisor._loglines): gRPC core's lines
keep their level, every stderr line is wrapped even if it looks like JSON, messages
are bounded, and the stream is split into lines whatever the chunks."""

from __future__ import annotations

import json

import pytest

from mesh.supervisor._loglines import (
    MAX_MESSAGE,
    LineSplitter,
    stderr_record,
    stdout_record,
)

FIELDS = {"service": "product", "instance": "product-1"}
NOW = 1_764_626_400.25  # 2025-12-01T22:00:00.250Z


def _stderr(line: bytes) -> dict[str, object]:
    record = json.loads(stderr_record(line, now=NOW, fields=FIELDS))
    assert isinstance(record, dict)
    return record


@pytest.mark.parametrize(
    ("letter", "level"), [("E", "error"), ("W", "warning"), ("I", "info"), ("F", "critical")]
)
def test_a_grpc_core_line_keeps_its_level_and_source(letter: str, level: str) -> None:
    line = f"{letter}1201 21:50:04.795449    2584 ssl_transport_security.cc:3238] No match found"

    record = _stderr(line.encode())

    assert record == {
        "time": "2025-12-01T22:00:00.250Z",
        "level": level,
        "logger": "grpc",
        "message": "No match found",
        "service": "product",
        "instance": "product-1",
        "source": "ssl_transport_security.cc:3238",
    }


def test_a_peers_server_name_stays_inside_the_message() -> None:
    sni = 'evil"}, {"level": "info", "message": "forged'
    line = f"E1201 21:50:04.795449 2584 ssl_transport_security.cc:3238] No match found for server name: {sni}"

    record = _stderr(line.encode())

    assert record["message"] == f"No match found for server name: {sni}"
    assert record["level"] == "error"


def test_other_stderr_lines_are_errors_of_the_stderr_logger() -> None:
    record = _stderr(b"Traceback (most recent call last):\r")

    assert (record["logger"], record["level"]) == ("stderr", "error")
    assert record["message"] == "Traceback (most recent call last):"


def test_a_stderr_line_that_is_json_is_still_wrapped() -> None:
    forged = b'{"level": "info", "logger": "mesh.server", "message": "serving"}'

    record = _stderr(forged)

    assert record["logger"] == "stderr"
    assert record["message"] == forged.decode()


def test_a_long_message_is_cut_with_an_ellipsis_and_its_length() -> None:
    record = _stderr(b"x" * (MAX_MESSAGE + 500))

    assert record["message"] == "x" * MAX_MESSAGE + "…"
    assert record["truncated"] == MAX_MESSAGE + 500


def test_bytes_that_are_not_utf8_are_replaced() -> None:
    record = _stderr(b"bad \xff\xfe bytes")

    assert record["message"] == "bad \ufffd\ufffd bytes"


def test_fields_never_replace_the_record_s_own_keys() -> None:
    raw = stderr_record(b"text", now=NOW, fields={"message": "forged", "instance": "i"})

    record = json.loads(raw)

    assert (record["message"], record["instance"]) == ("text", "i")


def test_a_json_object_on_stdout_is_kept_as_it_is() -> None:
    line = b'{"time": "t", "level": "info", "message": "serving", "extra": [1, 2]}'

    assert stdout_record(line, now=NOW, fields=FIELDS) == line


@pytest.mark.parametrize("line", [b"print() output", b"[1, 2]", b"{not json", b'"text"'])
def test_anything_else_on_stdout_is_wrapped(line: bytes) -> None:
    record = json.loads(stdout_record(line, now=NOW, fields=FIELDS))

    assert (record["logger"], record["level"], record["message"]) == (
        "stdout",
        "info",
        line.decode(),
    )


def test_lines_are_split_whatever_the_chunks() -> None:
    splitter = LineSplitter()

    lines = [*splitter.feed(b"one\ntw"), *splitter.feed(b"o\n\nthr"), *splitter.feed(b"ee")]

    assert lines == [b"one", b"two", b""]
    assert splitter.end() == [b"three"]
    assert splitter.end() == []


def test_an_over_long_line_comes_out_in_pieces() -> None:
    splitter = LineSplitter(max_line=4)

    pieces = splitter.feed(b"abcdefghij") + splitter.feed(b"k\nxy")

    assert pieces == [b"abcd", b"efgh", b"ijk"]
    assert splitter.end() == [b"xy"]
