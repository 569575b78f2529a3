"""A small HTTP/1.1 server on asyncio and httptools: the REST edge's front door.

One ``_Connection`` (an ``asyncio.Protocol``) per socket feeds what it reads to an
``httptools.HttpRequestParser``; the parser's callbacks build a ``Request`` and queue it.
One worker task per connection, started when a request is queued and ending when the
queue is empty, calls the handler and writes the answers in order, so pipelined requests
are answered one at a time, in order.

Hostile input is bounded before it costs memory or time:

* Sizes. Bytes are fed to the parser in slices: while a request head is incomplete at
  most what is left of ``max_header_bytes`` (431 past it), a ``Content-Length`` body
  exactly what is left of it, a chunked body at most what is left of its encoded cap
  (twice ``max_body_bytes`` plus ``max_header_bytes``, framing and trailers included;
  the slice that ends the head is not counted, so the cap holds to within one head).
  The request target is counted as it arrives (414), a declared length is checked
  before the body is read (413, before any ``100 Continue``), a decoded chunked body as
  it grows (413), and so is its number of chunks (413 past ``max_body_bytes // 64``, at
  least 256: tiny chunks cost a callback each).
  Pipelining is bounded too: past 16 queued requests the rest of what was read is kept
  unparsed and reading pauses until the worker catches up.
* Time. One lazily re-armed timer per connection serves four deadlines: a request head
  must complete within ``header_timeout`` (counted from the connection's start for its
  first request, 408), a body within ``body_timeout`` (408), an idle keep-alive
  connection is closed silently after ``idle_timeout`` (a new connection that sends
  nothing, after ``header_timeout``), a handler is cancelled after ``request_timeout``
  (504), and a client that stops reading while the transport is paused for writing is
  aborted after ``idle_timeout`` without progress. Moving a deadline later costs an
  attribute write, not a timer; the timer re-arms itself when it fires early.
* Errors the server answers itself (400, 408, 413, 414, 431, 501, 503) end the
  connection with ``connection: close``; where the socket can half-close, the server
  sends its FIN and reads and discards for up to two seconds before closing, so the
  client reads the error instead of a reset.
* Strict parsing is llhttp's: bare LF, obs-fold, CL with TE, duplicate CL, unknown
  methods or transfer codings, HTTP versions other than 1.0 and 1.1, a missing or
  repeated Host in HTTP/1.1, all get 400; a transfer coding besides "chunked" gets 501.
* Upgrade requests (h2c, websocket) without a body are served as plain HTTP/1.1, the
  Upgrade header ignored (never a 101); an upgrade request with a body, and CONNECT,
  get 400.

Responses: a ``Response`` is sent in one write with ``content-length``; a
``StreamingResponse`` sends its head at once, then each chunk (chunked transfer coding;
close-delimited for HTTP/1.0) as the iterator yields it, awaiting the transport's
``resume_writing`` whenever it has paused writing. If the iterator raises, the transport
is aborted without the final zero chunk (for HTTP/1.0, with a TCP reset), so no client
can take it for a complete message. If the client goes away (connection lost, or EOF:
as with most servers, a half-close counts as leaving), the worker is cancelled, which
cancels the handler or the iterator (whose ``aclose()`` is called). The server owns the
framing headers: ``content-length``, ``transfer-encoding`` and ``connection`` from a
handler are dropped, and a header with a control character (CR, LF, NUL, ...) makes the
response a 500.

Request header values are decoded as latin-1; names are lower-cased; trailers of a
chunked body are read and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final, cast

import httptools

__all__ = [
    "ErrorResponder",
    "Handler",
    "HttpLimits",
    "HttpServer",
    "Request",
    "Response",
    "StreamingResponse",
]

logger = logging.getLogger("gateway.http")


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request, body included."""

    method: str
    """"GET", "POST", ... (upper case, as llhttp knows them)."""
    path: str
    """The raw path, still percent-encoded, without the query ("*" for ``OPTIONS *``)."""
    query: str
    """The raw query string without "?", "" if none."""
    headers: Mapping[str, str]
    """Lower-cased names; repeated headers joined with ", " (RFC 9110)."""
    body: bytes
    client: str
    """The peer's address (host only), e.g. for rate limits."""
    http_version: str
    """"1.1" or "1.0"."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class StreamingResponse:
    status: int
    headers: Sequence[tuple[str, str]]
    chunks: AsyncIterator[bytes]
    """Each chunk is sent and flushed as it comes; empty chunks are skipped."""


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]
ErrorResponder = Callable[[int, str], Response]
"""(status, short message) -> the response the server sends for its own errors."""


@dataclass(frozen=True)
class HttpLimits:
    max_body_bytes: int = 1 << 20
    """A larger Content-Length, or a chunked body growing past it: 413, connection closed."""
    max_header_bytes: int = 16 << 10
    """Request line plus headers: 431."""
    max_url_bytes: int = 8 << 10
    """The request target: 414."""
    header_timeout: float = 10.0
    """The request head must complete within this (slowloris): else 408 and close."""
    body_timeout: float = 30.0
    """The body must complete within this after the head: else 408 and close."""
    idle_timeout: float = 60.0
    """A keep-alive connection with no request is closed silently after this; so is a
    connection whose client stops reading our response for this long."""
    request_timeout: float = 30.0
    """A handler taking longer is cancelled: 504. Streaming a response is not bounded."""
    max_connections: int = 1024
    """Beyond it new connections get 503 and are closed."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpLimits.{name} must be positive")


def _plain_error(status: int, message: str) -> Response:
    """The default error responder: the message as text/plain."""
    return Response(status, (("content-type", "text/plain; charset=utf-8"),), message.encode())


_DEFAULT_LIMITS: Final = HttpLimits()

# Parser states of a connection.
_IDLE: Final = 0  # between requests: nothing of the next one parsed
_HEAD: Final = 1  # request line and headers arriving
_BODY: Final = 2  # head complete, body arriving
_DEAD: Final = 3  # nothing more is read (closing, errored, or lingering)

_PIPELINE_DEPTH: Final = 16  # queued requests past which parsing waits for the worker
_PIPELINED_STEP: Final = 4096  # slice size while requests are queued, bounding the queue
_LINGER: Final = 2.0  # seconds an error response waits for the client to close
_CONCAT_MAX: Final = 64 << 10  # bodies up to this go out in the same write as the head
_NO_BODY_STATUS: Final = frozenset((204, 304))
_SERVER_OWNED: Final = frozenset(("content-length", "transfer-encoding", "connection"))
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_RESET_LINGER: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST

_STATUS_LINES: Final = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}
_METHODS: dict[bytes, str] = {}  # llhttp knows a fixed set of methods: bounded
_NAMES_MAX: Final = 512
_NAMES: dict[bytes, str] = {}  # raw header name -> lower-cased str, bounded
for _name in (
    "Host",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Authorization",
    "Cache-Control",
    "Connection",
    "Content-Length",
    "Content-Type",
    "Cookie",
    "Expect",
    "Origin",
    "Referer",
    "Transfer-Encoding",
    "Upgrade",
    "User-Agent",
    "X-Request-Id",
    "X-Forwarded-For",
    "Idempotency-Key",
    "Grpc-Timeout",
    "Traceparent",
):
    _NAMES[_name.encode()] = _NAMES[_name.lower().encode()] = _name.lower()


class _Reject(Exception):
    """Raised in a parser callback: answer with this status and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def _encode_head(
    status: int,
    headers: Sequence[tuple[str, str]],
    server_line: str,
    length: int | None,
    keep_alive: bool,
    chunked: bool,
    http10: bool,
) -> bytes:
    if not 200 <= status <= 599:
        raise ValueError(f"status {status!r} is not a final status")
    line = _STATUS_LINES.get(status)
    parts = [f"HTTP/1.1 {status:d} \r\n" if line is None else line]
    append = parts.append
    for name, value in headers:
        # isprintable() is false for CR, LF, NUL and every other control character.
        if not (name.isprintable() and value.isprintable()) or not name:
            raise ValueError("response header with a control character")
        if name.lower() in _SERVER_OWNED:
            continue
        append(f"{name}: {value}\r\n")
    if server_line:
        append(server_line)
    if length is not None:
        append(f"content-length: {length}\r\n")
    if chunked:
        append("transfer-encoding: chunked\r\n")
    if not keep_alive:
        append("connection: close\r\n")
    elif http10:
        append("connection: keep-alive\r\n")
    append("\r\n")
    return "".join(parts).encode("latin-1")


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_left",
        "_body_size",
        "_chunked",
        "_chunks",
        "_client",
        "_continue_pending",
        "_drain_waiter",
        "_handler_deadline",
        "_head_bytes",
        "_headers",
        "_in_handler",
        "_limits",
        "_loop",
        "_lost",
        "_messages",
        "_parser",
        "_path",
        "_query",
        "_queue",
        "_raw_body",
        "_read_deadline",
        "_reject",
        "_rejected",
        "_rstate",
        "_server",
        "_stash",
        "_timed_out",
        "_timer",
        "_timer_at",
        "_transport",
        "_url",
        "_version",
        "_worker",
        "_write_deadline",
        "_write_paused",
    )
    _transport: asyncio.Transport  # set by connection_made

    def __init__(self, server: HttpServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._limits = server._limits
        self._parser = httptools.HttpRequestParser(self)
        self._client = ""
        self._rstate = _IDLE
        self._messages = 0
        self._head_bytes = 0
        self._url = b""
        self._path = ""
        self._query = ""
        self._version = "1.1"
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_left = 0
        self._chunked = False
        self._chunks = 0
        self._raw_body = 0
        self._reject: _Reject | None = None
        self._continue_pending = False
        self._queue: deque[tuple[Request | Response, bool]] = deque()
        self._stash: bytes | None = None
        self._worker: asyncio.Task[None] | None = None
        self._in_handler = False
        self._timed_out = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost = False
        self._rejected = False
        self._read_deadline = 0.0
        self._write_deadline = 0.0
        self._handler_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- transport callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._client = str(peer[0])
        server = self._server
        server._conns.add(self)
        if server._active >= self._limits.max_connections or server._closing:
            self._rejected = True
            self._fail(503, "too many connections")
            return
        server._active += 1
        self._set_read_deadline(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._rstate = _DEAD
        self._stash = None
        server = self._server
        server._conns.discard(self)
        if not self._rejected:
            server._active -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._worker is not None:
            self._worker.cancel()
        server._connection_gone()

    def eof_received(self) -> bool:
        # The client has stopped sending. As with most servers, a half-close counts as
        # the client leaving: what is in flight is cancelled and the connection closed.
        self._rstate = _DEAD
        self._stash = None
        if self._worker is not None:
            self._worker.cancel()
        self._set_read_deadline(self._limits.idle_timeout)  # for the close to finish
        return False

    def pause_writing(self) -> None:
        self._write_paused = True
        when = self._loop.time() + self._limits.idle_timeout
        self._write_deadline = when
        self._arm(when)

    def resume_writing(self) -> None:
        self._write_paused = False
        self._write_deadline = 0.0
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._rstate == _DEAD:
            return  # closing or lingering: discard
        if self._stash is not None:
            self._stash += data  # reading is paused; a transport may still hand over a bit
            return
        self._feed(data)

    # -- feeding the parser -----------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        view: memoryview | None = None
        limits = self._limits
        while pos < n:
            state = self._rstate
            if state == _DEAD:
                return
            if state == _BODY:
                if self._chunked:
                    step = self._chunked_cap() - self._raw_body
                    if step <= 0:
                        self._fail(413, "request body too large")
                        return
                    self._raw_body += min(step, n - pos)
                else:
                    step = self._body_left
            else:
                if self._worker is not None and len(self._queue) >= _PIPELINE_DEPTH:
                    self._stash = bytes(data[pos:]) if view is None else bytes(view[pos:])
                    self._read_deadline = 0.0  # not reading is our doing, not the client's
                    self._transport.pause_reading()
                    return
                step = limits.max_header_bytes - self._head_bytes
                if step <= 0:
                    self._fail(431, "request header too large")
                    return
                if self._worker is not None and step > _PIPELINED_STEP:
                    step = _PIPELINED_STEP
                self._head_bytes += min(step, n - pos)
            end = pos + step
            if pos == 0 and end >= n:
                piece: bytes | memoryview = data
            else:
                if view is None:
                    view = memoryview(data)
                piece = view[pos:end]
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                # The request (bodiless: see on_headers_complete) has been queued as plain
                # HTTP/1.1; what follows it is parsed by a fresh parser.
                self._parser = httptools.HttpRequestParser(self)
                end = pos + int(upgrade.args[0])
            except httptools.HttpParserError as error:
                self._parse_error(error)
                return
            pos = end

    def _chunked_cap(self) -> int:
        return 2 * self._limits.max_body_bytes + self._limits.max_header_bytes

    def _parse_error(self, error: httptools.HttpParserError) -> None:
        reject = self._reject
        self._reject = None
        if reject is not None:
            self._fail(reject.status, reject.message)
            return
        if isinstance(error, httptools.HttpParserCallbackError):
            logger.error("HTTP parser callback failed", exc_info=error)
            self._fail(500, "internal error")
            return
        self._fail(400, "malformed request")

    def _unstash(self) -> None:
        data = self._stash
        if data is None:
            return
        self._stash = None
        self._feed(data)
        if self._stash is None and self._rstate != _DEAD and not self._lost:
            self._transport.resume_reading()
            if self._rstate == _HEAD:
                self._set_read_deadline(self._limits.header_timeout)
            elif self._rstate == _BODY:
                self._set_read_deadline(self._limits.body_timeout)

    # -- parser callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._rstate = _HEAD
        if self._messages:
            # The first request's head is timed from the connection's start.
            self._set_read_deadline(self._limits.header_timeout)
        self._messages += 1

    def on_url(self, url: bytes) -> None:
        have = self._url
        if len(have) + len(url) > self._limits.max_url_bytes:
            self._reject = _Reject(414, "request target too long")
            raise self._reject
        self._url = have + url if have else url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._rstate != _HEAD:
            return  # a trailer of a chunked body: dropped
        key = _NAMES.get(name)
        if key is None:
            key = name.lower().decode("latin-1")
            if len(_NAMES) < _NAMES_MAX:
                _NAMES[name] = key
        if value and value[-1] in (32, 9):
            value = value.rstrip(b" \t")
        text = value.decode("latin-1")
        headers = self._headers
        have = headers.get(key)
        if have is None:
            headers[key] = text
        else:
            if key == "host":
                self._reject = _Reject(400, "repeated Host header")
                raise self._reject
            headers[key] = f"{have}, {text}"

    def on_headers_complete(self) -> None:
        parser = self._parser
        headers = self._headers
        limits = self._limits
        version = parser.get_http_version()
        if version == "1.1":
            if "host" not in headers:
                self._reject = _Reject(400, "missing Host header")
                raise self._reject
        elif version != "1.0":
            self._reject = _Reject(400, "unsupported HTTP version")
            raise self._reject
        self._version = version
        self._split_target()
        coding = headers.get("transfer-encoding")
        if coding is not None:
            # llhttp requires "chunked" last; any other coding before it ("gzip, chunked")
            # would hand the handler an encoded body as if it were plain.
            if coding != "chunked" and coding.lower() != "chunked":
                self._reject = _Reject(501, "transfer coding not supported")
                raise self._reject
            self._chunked = True
            self._body_left = -1
            has_body = True
        else:
            length = headers.get("content-length")
            if length is None:
                self._body_left = 0
            else:
                try:
                    self._body_left = int(length)
                except ValueError:
                    self._reject = _Reject(400, "invalid Content-Length")
                    raise self._reject from None
                if self._body_left > limits.max_body_bytes:
                    self._reject = _Reject(413, "request body too large")
                    raise self._reject
            has_body = self._body_left > 0
        if parser.should_upgrade() and (has_body or parser.get_method() == b"CONNECT"):
            # The parser would skip the body of an upgrade request; CONNECT is a tunnel.
            self._reject = _Reject(400, "upgrade not supported")
            raise self._reject
        self._rstate = _BODY
        if has_body:
            self._set_read_deadline(limits.body_timeout)
            expect = headers.get("expect")
            if expect is not None and version == "1.1" and expect.lower() == "100-continue":
                if self._worker is None:
                    self._transport.write(_CONTINUE)
                else:
                    self._continue_pending = True  # after the answers before it
        else:
            self._read_deadline = 0.0

    def _split_target(self) -> None:
        url = self._url
        if url[:1] == b"/":
            cut = url.find(b"#")
            if cut >= 0:
                url = url[:cut]
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = url, b""
        else:  # absolute-form: "http://host/path?query"
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._reject = _Reject(400, "invalid request target")
                raise self._reject from None
            path, query = parsed.path or b"/", parsed.query or b""
        self._path = path.decode("latin-1")
        self._query = query.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._chunked:
            if self._body_size > self._limits.max_body_bytes:
                self._reject = _Reject(413, "request body too large")
                raise self._reject
        else:
            self._body_left -= len(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1
        if self._chunks > max(256, self._limits.max_body_bytes >> 6):
            self._reject = _Reject(413, "request body too large")
            raise self._reject

    def on_message_complete(self) -> None:
        parser = self._parser
        raw = parser.get_method()
        method = _METHODS.get(raw)
        if method is None:
            method = _METHODS[raw] = raw.decode("ascii")
        parts = self._body
        body = b"" if not parts else parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            method, self._path, self._query, self._headers, body, self._client, self._version
        )
        keep = parser.should_keep_alive() and not self._server._closing
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._body_left = 0
        self._chunked = False
        self._chunks = 0
        self._raw_body = 0
        self._head_bytes = 0
        self._continue_pending = False
        self._read_deadline = 0.0
        self._rstate = _IDLE if keep else _DEAD
        self._queue.append((request, keep))
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    # -- answering --------------------------------------------------------------------

    async def _work(self) -> None:
        queue = self._queue
        try:
            while queue and not self._lost:
                item, keep = queue.popleft()
                if not isinstance(item, Request):
                    self._send_final(item)  # the server's own error: the last answer
                    return
                if not await self._respond(item, keep):
                    self._close()
                    return
                if self._write_paused:
                    await self._drain()
                if self._stash is not None and len(queue) < _PIPELINE_DEPTH:
                    self._unstash()
            self._idle()
        finally:
            self._worker = None

    def _idle(self) -> None:
        """The queue is empty: wait for the next request, or close."""
        if self._lost:
            return
        state = self._rstate
        if state == _DEAD:
            self._close()
        elif state == _IDLE:
            if self._server._closing:
                self._close()
            else:
                self._set_read_deadline(self._limits.idle_timeout)
        elif state == _BODY and self._continue_pending:
            self._continue_pending = False
            self._transport.write(_CONTINUE)

    async def _respond(self, request: Request, keep: bool) -> bool:
        """Answer one request; False if the connection must end."""
        server = self._server
        when = self._loop.time() + self._limits.request_timeout
        self._handler_deadline = when
        self._arm(when)
        self._in_handler = True
        response: object = None
        try:
            response = await server._handler(request)
        except asyncio.CancelledError:
            if not self._timed_out:
                raise
        except Exception:
            logger.exception("handler failed on %s %.200s", request.method, request.path)
            response = server._error_response(500, "internal error")
        finally:
            self._in_handler = False
            self._handler_deadline = 0.0
        if self._timed_out:
            self._timed_out = False
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            response = server._error_response(504, "request timed out")
        if self._lost:
            return False
        if server._closing:
            keep = False
        if isinstance(response, Response):
            self._write_response(request, response, keep)
            return keep
        if isinstance(response, StreamingResponse):
            return await self._stream(request, response, keep)
        logger.error("handler returned %s, not a response", type(response).__name__)
        self._write_response(request, server._error_response(500, "internal error"), keep)
        return keep

    def _write_response(self, request: Request, response: Response, keep: bool) -> None:
        server = self._server
        status = response.status
        body = response.body
        try:
            if not isinstance(body, bytes):
                if not isinstance(body, bytearray | memoryview):
                    raise TypeError(f"response body is {type(body).__name__}, not bytes")
                body = bytes(body)
            head = _encode_head(
                status,
                response.headers,
                server._server_line,
                None if status in _NO_BODY_STATUS else len(body),
                keep,
                False,
                request.http_version == "1.0",
            )
        except Exception:
            logger.exception("invalid response to %s %.200s", request.method, request.path)
            response = server._error_response(500, "internal error")
            status = response.status
            body = response.body
            head = _encode_head(
                status, response.headers, server._server_line, len(body), keep, False, False
            )
        transport = self._transport
        if request.method == "HEAD" or status in _NO_BODY_STATUS or not body:
            transport.write(head)
        elif len(body) <= _CONCAT_MAX:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)

    async def _stream(self, request: Request, response: StreamingResponse, keep: bool) -> bool:
        chunks = response.chunks
        transport = self._transport
        http10 = request.http_version == "1.0"
        try:
            status = response.status
            bodiless = status in _NO_BODY_STATUS
            if http10:
                keep = False  # the body is delimited by closing the connection
            try:
                head = _encode_head(
                    status,
                    response.headers,
                    self._server._server_line,
                    None,
                    keep,
                    not (http10 or bodiless),
                    http10,
                )
            except Exception:
                logger.exception("invalid response to %s %.200s", request.method, request.path)
                self._write_response(
                    request, self._server._error_response(500, "internal error"), keep
                )
                return keep
            transport.write(head)
            if bodiless or request.method == "HEAD":
                return keep
            async for chunk in chunks:
                if not chunk:
                    continue  # an empty chunk would end the body
                if http10:
                    transport.write(chunk)
                else:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if self._write_paused:
                    await self._drain()
            if not http10:
                transport.write(_LAST_CHUNK)
            return keep
        except Exception:
            logger.exception(
                "response stream to %s %.200s failed; connection aborted",
                request.method,
                request.path,
            )
            # A chunked body without its last chunk is incomplete to any client; a
            # close-delimited one (HTTP/1.0) needs a reset to be told from a complete one.
            self._abort(reset=http10)
            return False
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.exception("closing a response stream failed")

    async def _drain(self) -> None:
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def _send_final(self, response: Response) -> None:
        """Send the server's own error response and end the connection."""
        self._rstate = _DEAD
        self._read_deadline = 0.0
        transport = self._transport
        if self._lost or transport.is_closing():
            return
        body = response.body
        head = _encode_head(
            response.status,
            response.headers,
            self._server._server_line,
            len(body),
            False,
            False,
            False,
        )
        transport.write(head + body)
        if transport.can_write_eof():
            # Half-close, and read (and discard) until the client closes or the linger
            # time is up: closing with its unread bytes would reset the connection and
            # could destroy the error response before the client reads it.
            transport.write_eof()
            transport.resume_reading()
            self._set_read_deadline(_LINGER)
        else:
            self._close()

    def _fail(self, status: int, message: str) -> None:
        if self._rstate == _DEAD:
            return
        self._rstate = _DEAD
        self._read_deadline = 0.0
        self._stash = None
        response = self._server._error_response(status, message)
        if self._worker is None:
            self._send_final(response)
        else:
            self._queue.append((response, False))  # after the answers before it

    def _close(self) -> None:
        """Close after what is buffered is sent; abort if it cannot be sent in time."""
        self._rstate = _DEAD
        transport = self._transport
        if self._lost or transport.is_closing():
            return
        transport.close()
        self._set_read_deadline(self._limits.idle_timeout)

    def _abort(self, *, reset: bool = False) -> None:
        """Drop the connection and what is buffered; with ``reset``, send a TCP reset
        rather than a FIN, so that no client can take the end for a complete message."""
        self._rstate = _DEAD
        if self._lost:
            return
        if reset:
            sock = self._transport.get_extra_info("socket")
            with contextlib.suppress(AttributeError, OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
        self._transport.abort()

    def _shutdown(self) -> None:
        """The server is closing: close at once if nothing is in flight."""
        if self._worker is None and self._rstate == _IDLE and self._stash is None:
            self._close()

    def _kill(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._abort()

    # -- deadlines ----------------------------------------------------------------------

    def _set_read_deadline(self, delay: float) -> None:
        when = self._loop.time() + delay
        self._read_deadline = when
        if self._timer is None or self._timer_at > when:
            self._arm(when)

    def _arm(self, when: float) -> None:
        """Make sure the timer fires no later than ``when``."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return
            timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._lost:
            return
        now = self._loop.time()
        later = 0.0
        when = self._handler_deadline
        if when:
            if now >= when:
                self._handler_deadline = 0.0
                if self._in_handler and self._worker is not None:
                    self._timed_out = True
                    self._worker.cancel()
            else:
                later = when
        when = self._write_deadline
        if when:
            if now >= when:
                logger.debug("client %s stopped reading; connection aborted", self._client)
                self._write_deadline = 0.0
                self._kill()
                return
            later = when if not later else min(later, when)
        when = self._read_deadline
        if when:
            if now >= when:
                self._read_deadline = 0.0
                self._read_expired()
            else:
                later = when if not later else min(later, when)
        if later and not self._lost:
            self._arm(later)

    def _read_expired(self) -> None:
        state = self._rstate
        if state == _DEAD:
            self._abort()  # a close or a linger that did not finish in time
        elif state == _IDLE:
            if self._worker is None:
                self._close()  # idle keep-alive (or a new connection that sent nothing)
        elif self._stash is None:
            self._fail(
                408, "request head timed out" if state == _HEAD else "request body timed out"
            )


class HttpServer:
    """An HTTP/1.1 server calling ``handler`` for each request (see the module docstring)."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: HttpLimits = _DEFAULT_LIMITS,
        error_responder: ErrorResponder | None = None,
        tls: ssl.SSLContext | None = None,
        server_header: str | None = None,
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._error_responder = error_responder or _plain_error
        self._tls = tls
        if server_header is not None and not server_header.isprintable():
            raise ValueError("server_header has a control character")
        self._server_line = f"server: {server_header}\r\n" if server_header else ""
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._active = 0
        self._closing = False
        self._drained: asyncio.Future[None] | None = None
        self._url = ""

    async def start(self, host: str, port: int) -> int:
        """Bind (port 0: any free port) and start serving; returns the bound port."""
        if self._server is not None or self._closing:
            raise RuntimeError("the server has already been started")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self, loop),
            host,
            port,
            ssl=self._tls,
            ssl_handshake_timeout=self._limits.header_timeout if self._tls is not None else None,
            backlog=min(max(self._limits.max_connections, 128), 4096),
        )
        self._server = server
        bound = server.sockets[0].getsockname()
        address = str(bound[0])
        if address in ("0.0.0.0", ""):
            address = "127.0.0.1"
        elif address == "::":
            address = "::1"
        if server.sockets[0].family == socket.AF_INET6:
            address = f"[{address}]"
        scheme = "https" if self._tls is not None else "http"
        self._url = f"{scheme}://{address}:{bound[1]}"
        return int(bound[1])

    @property
    def url(self) -> str:
        """e.g. "http://127.0.0.1:8080" ("https" with TLS)."""
        if not self._url:
            raise RuntimeError("the server has not been started")
        return self._url

    async def close(self, grace: float = 5.0) -> None:
        """Stop accepting; close idle connections at once; let requests in flight finish
        for up to ``grace`` seconds (answered with ``connection: close``); then cancel the
        rest."""
        server = self._server
        if server is None or self._closing:
            return
        self._closing = True
        server.close()
        loop = asyncio.get_running_loop()
        for conn in list(self._conns):
            conn._shutdown()
        if self._conns:
            self._drained = loop.create_future()
            await asyncio.wait((self._drained,), timeout=grace)
        workers = [conn._worker for conn in self._conns if conn._worker is not None]
        for conn in list(self._conns):
            conn._kill()
        if workers:
            await asyncio.wait(workers, timeout=1.0)
        await server.wait_closed()

    # -- used by connections ------------------------------------------------------------

    def _connection_gone(self) -> None:
        drained = self._drained
        if not self._conns and drained is not None and not drained.done():
            drained.set_result(None)

    def _error_response(self, status: int, message: str) -> Response:
        """The error responder's answer, or the plain one if it gives no usable answer."""
        try:
            response = self._error_responder(status, message)
            if not isinstance(response, Response):
                raise TypeError(f"error responder returned {type(response).__name__}")
            if not isinstance(response.body, bytes):
                raise TypeError("error responder returned a body that is not bytes")
            _encode_head(response.status, response.headers, "", 0, False, False, False)
        except Exception:
            logger.exception("error responder failed")
            response = _plain_error(status, message)
        return response
