"""The supervisor's control channel (mesh.supervisor._control): the JSON-lines protocol,
and a round trip over a real Unix socket with an in-process handler."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.errors import MeshError
from mesh.supervisor._control import (
    MAX_REQUEST,
    ControlEvent,
    ControlRequest,
    ControlServer,
    Progress,
    ProtocolError,
    send_command,
    socket_path,
)


def test_a_request_round_trips() -> None:
    request = ControlRequest("restart", "product")

    assert request.encode().endswith(b"\n")
    assert ControlRequest.decode(request.encode()) == request


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"command": "delete", "service": "product"}\n',
        b'{"command": "restart"}\n',
        b'{"command": "restart", "service": ""}\n',
        b'{"command": "restart", "service": 7}\n',
    ],
)
def test_a_bad_request_is_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        ControlRequest.decode(line)


@pytest.mark.parametrize(
    "event",
    [
        ControlEvent("progress", "product-1: stopping"),
        ControlEvent("done", "restarted product"),
        ControlEvent("failed", "product-1 is not SERVING again", code=1, log='{"a": 1}\n{"b": 2}'),
    ],
)
def test_events_round_trip_as_one_line_each(event: ControlEvent) -> None:
    line = event.encode()

    assert line.count(b"\n") == 1
    assert ControlEvent.decode(line) == event
    assert event.final is (event.kind != "progress")


@pytest.mark.parametrize(
    "line",
    [
        b'{"event": "shrug", "message": "x"}',
        b'{"event": "done"}',
        b'{"event": "failed", "message": "x", "code": "1"}',
    ],
)
def test_a_bad_event_is_refused(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        ControlEvent.decode(line)


def test_the_socket_lives_in_the_state_dir_unless_its_path_is_too_long(tmp_path: Path) -> None:
    assert socket_path(tmp_path) == tmp_path.resolve() / "control.sock"

    deep = socket_path(tmp_path / ("d" * 120))

    assert deep.name == "control.sock"
    assert len(str(deep)) <= 100
    assert stat.S_IMODE(deep.parent.stat().st_mode) == 0o700
    deep.parent.rmdir()


async def _restart_handler(request: ControlRequest, progress: Progress) -> ControlEvent:
    if request.service == "broken":
        raise MeshError("it broke")
    await progress(f"{request.service}-1: restarted")
    await progress(f"{request.service}-2: restarted")
    return ControlEvent("done", f"restarted {request.service}")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ControlServer]:
    control = ControlServer(socket_path(tmp_path / ".mesh"), _restart_handler)
    await control.start()
    try:
        yield control
    finally:
        await control.aclose()


async def _events(server: ControlServer, service: str) -> list[ControlEvent]:
    events: list[ControlEvent] = []
    await _collect(server, service, events)
    return events


async def _collect(server: ControlServer, service: str, events: list[ControlEvent]) -> None:
    request = ControlRequest("restart", service)
    async for event in send_command(str(server.path), request, idle_timeout=5):
        events.append(event)


async def test_progress_is_streamed_then_the_final_event(server: ControlServer) -> None:
    events = await _events(server, "inventory")

    assert events == [
        ControlEvent("progress", "inventory-1: restarted"),
        ControlEvent("progress", "inventory-2: restarted"),
        ControlEvent("done", "restarted inventory"),
    ]


async def test_the_socket_is_for_its_owner_only(server: ControlServer) -> None:
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600


async def test_a_handler_error_is_a_failure_with_code_1(server: ControlServer) -> None:
    events = await _events(server, "broken")

    assert events == [ControlEvent("failed", "it broke", code=1)]


async def test_a_malformed_request_gets_a_failure_with_code_2(server: ControlServer) -> None:
    for line in (b"{}\n", b"x" * (MAX_REQUEST + 10) + b"\n"):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(line)
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        await writer.wait_closed()

        assert (answer["event"], answer["code"]) == ("failed", 2)


async def test_an_early_close_by_the_supervisor_is_a_protocol_error(tmp_path: Path) -> None:
    async def hang_up(request: ControlRequest, progress: Progress) -> ControlEvent:
        await progress("started")
        raise asyncio.CancelledError  # as when the supervisor stops mid-way

    control = ControlServer(socket_path(tmp_path), hang_up)
    await control.start()
    try:
        events: list[ControlEvent] = []
        with pytest.raises(ProtocolError):
            await _collect(control, "x", events)
        assert events == [ControlEvent("progress", "started")]
    finally:
        await control.aclose()


async def test_closing_removes_the_socket(tmp_path: Path) -> None:
    control = ControlServer(socket_path(tmp_path), _restart_handler)
    await control.start()

    await control.aclose()

    assert not control.path.exists()
    with pytest.raises(FileNotFoundError):
        await _events(control, "x")
