"""The supervisor's control channel: how meshctl asks the running supervisor for what only
it can do, since it owns the processes (a rolling restart).

A Unix socket of mode 0600 under the state dir (in a private temporary folder instead
when that path is too long for a socket), named in state.json; a connection from
another user is closed unanswered. JSON lines: the client sends one request and reads
events until the final one.

    -> {"command": "restart", "service": "product"}
    <- {"event": "progress", "message": "product-1: stopping (pid 4242)"}     (any number)
    <- {"event": "done", "message": "..."}
       or {"event": "failed", "code": 1, "message": "why", "log": "the log's tail"}

A failure's `code` is meshctl's exit code: 1 the operation failed, 2 a bad request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mesh.errors import MeshError

__all__ = [
    "COMMANDS",
    "ControlEvent",
    "ControlRequest",
    "ControlServer",
    "ProtocolError",
    "send_command",
    "socket_path",
]

COMMANDS = frozenset({"restart"})
MAX_REQUEST = 4096
"""Bytes of one request line; a longer one is refused unread."""
MAX_EVENT = 1024 * 1024
"""Bytes of one event line a client reads (a failure carries a log tail)."""
EVENTS = frozenset({"progress", "done", "failed"})
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class ProtocolError(MeshError):
    """A line on the control channel is not what the protocol allows."""


@dataclass(frozen=True)
class ControlRequest:
    command: str
    service: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> ControlRequest:
        data = _object(line)
        command, service = data.get("command"), data.get("service")
        if command not in COMMANDS:
            raise ProtocolError(f"unknown command (known: {', '.join(sorted(COMMANDS))})")
        if not isinstance(service, str) or not service:
            raise ProtocolError("the request names no service")
        return cls(str(command), service)


@dataclass(frozen=True)
class ControlEvent:
    """`kind` is progress (a step done), or the final done or failed."""

    kind: str
    message: str
    code: int = 0  # of a failure: meshctl's exit code
    log: str = ""  # of a failure: the failing instance's log tail

    @property
    def final(self) -> bool:
        return self.kind != "progress"

    def encode(self) -> bytes:
        data: dict[str, object] = {"event": self.kind, "message": self.message}
        if self.kind == "failed":
            data.update(code=self.code, log=self.log)
        return json.dumps(data).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> ControlEvent:
        data = _object(line)
        kind, message = data.get("event"), data.get("message")
        code, log = data.get("code", 0), data.get("log", "")
        if kind not in EVENTS or not isinstance(message, str):
            raise ProtocolError("not an event")
        if not isinstance(code, int) or not isinstance(log, str):
            raise ProtocolError("malformed failure event")
        return cls(str(kind), message, code, log)


def _object(line: bytes) -> dict[str, object]:
    try:
        data = json.loads(line)
    except ValueError:
        raise ProtocolError("not a JSON line") from None
    if not isinstance(data, dict):
        raise ProtocolError("not a JSON object")
    return data


Progress = Callable[[str], Awaitable[None]]
Handler = Callable[[ControlRequest, Progress], Awaitable[ControlEvent]]
"""Does what a request asks, reporting each step through `progress`; returns the final
event. An exception it raises is sent as a failure (code 1)."""


def socket_path(state_dir: Path) -> Path:
    """Where a supervisor for `state_dir` listens: <state_dir>/control.sock, or a fresh
    private folder's when that path is too long for a Unix socket."""
    path = state_dir.resolve() / "control.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="shopmesh-")) / "control.sock"


class ControlServer:
    """Serves `handler` on the Unix socket `path` until `aclose()`."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # left by a supervisor that was killed
        self._server = await asyncio.start_unix_server(
            self._serve, path=self.path, limit=MAX_REQUEST
        )
        os.chmod(self.path, 0o600)  # and a peer of another user is refused in _serve

    async def aclose(self) -> None:
        """Stop listening and end every connection (a request in progress is cancelled)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self.path.unlink(missing_ok=True)
        if self.path.parent.name.startswith("shopmesh-"):  # socket_path's private folder
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if _same_user(writer):
                await self._answer(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def progress(message: str) -> None:
            # A client that went away does not stop the work: a rolling restart half
            # done would leave a stand-in running.
            with contextlib.suppress(OSError):
                writer.write(ControlEvent("progress", message).encode())
                await writer.drain()

        try:
            request = ControlRequest.decode(await reader.readline())
        except (ProtocolError, ValueError) as error:  # ValueError: a line over the limit
            final = ControlEvent("failed", f"bad request: {error}", code=2)
        else:
            try:
                final = await self._handler(request, progress)
            except MeshError as error:
                final = ControlEvent("failed", str(error), code=1)
        with contextlib.suppress(OSError):
            writer.write(final.encode())
            await writer.drain()


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer runs as this process's user (Linux' SO_PEERCRED; elsewhere the
    socket's mode alone guards it)."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return bool(uid == os.getuid())


async def send_command(
    path: str, request: ControlRequest, *, idle_timeout: float
) -> AsyncIterator[ControlEvent]:
    """Send `request` to the supervisor listening on `path` and yield its events up to
    the final one. Raises OSError if it cannot be reached, ProtocolError if it sends
    something else or closes the connection early, TimeoutError after `idle_timeout` s
    without an event."""
    reader, writer = await asyncio.open_unix_connection(path, limit=MAX_EVENT)
    try:
        writer.write(request.encode())
        await writer.drain()
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    line = await reader.readline()
            except ValueError:  # over MAX_EVENT
                raise ProtocolError("the supervisor sent an over-long line") from None
            if not line:
                raise ProtocolError("the supervisor closed the connection before finishing")
            event = ControlEvent.decode(line)
            yield event
            if event.final:
                return
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
