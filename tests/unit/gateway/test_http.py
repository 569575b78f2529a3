"""The edge's HTTP/1.1 server over real sockets on 127.0.0.1: framing, keep-alive and
pipelining, streaming and backpressure, and every protection against hostile input,
each checked with a well-behaved client on another connection served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway._http import HttpLimits, HttpServer, Request, Response, StreamingResponse

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter

# Short limits, so that each protection triggers fast.
FAST = HttpLimits(
    max_body_bytes=1024,
    max_header_bytes=2048,
    max_url_bytes=512,
    header_timeout=0.3,
    body_timeout=0.3,
    idle_timeout=0.5,
    request_timeout=0.3,
)
WAIT = 5.0  # upper bound for anything a test waits on


def describe(request: Request) -> bytes:
    return json.dumps(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": dict(request.headers),
            "body": request.body.decode("latin-1"),
            "client": request.client,
            "version": request.http_version,
        }
    ).encode()


async def echo(request: Request) -> Response:
    return Response(200, [("content-type", "application/json")], describe(request))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


async def read_head(reader: Reader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head[:-4].split(b"\r\n")
    version, status, _ = lines[0].split(b" ", 2)
    assert version == b"HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        assert sep, line
        key = name.decode().lower()
        assert key not in headers, f"repeated {key}"
        headers[key] = value.strip().decode("latin-1")
    return int(status), headers


async def read_chunk(reader: Reader) -> bytes:
    """One chunk of a chunked body; b"" for the last one (its CRLF consumed)."""
    size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT)).split(b";")[0], 16)
    data = await asyncio.wait_for(reader.readexactly(size + 2), WAIT)
    assert data[-2:] == b"\r\n"
    return data[:-2]


async def read_reply(reader: Reader, *, head: bool = False) -> Reply:
    status, headers = await read_head(reader)
    if head or status in (100, 204, 304):
        body = b""
    elif "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT)
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while chunk := await read_chunk(reader):
            parts.append(chunk)
        body = b"".join(parts)
    else:
        body = await asyncio.wait_for(reader.read(), WAIT)
    return Reply(status, headers, body)


async def is_closed(reader: Reader) -> bool:
    """The server ended the connection (EOF or reset) with nothing more to read."""
    try:
        data = await asyncio.wait_for(reader.read(1), WAIT)
    except ConnectionResetError:
        return True
    return data == b""


async def read_to_end(reader: Reader) -> bytes:
    parts = []
    while data := await asyncio.wait_for(reader.read(65536), WAIT):
        parts.append(data)
    return b"".join(parts)


def get(path: str = "/", *extra: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: test", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Harness:
    """Starts servers and raw clients; closes them all at the end of the test."""

    def __init__(self) -> None:
        self.servers: list[HttpServer] = []
        self.writers: list[Writer] = []

    async def serve(
        self,
        handler: Callable[[Request], Awaitable[Response | StreamingResponse]] = echo,
        **options: object,
    ) -> HttpServer:
        server = HttpServer(handler, **options)  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0)
        self.servers.append(server)
        return server

    async def connect(
        self, server: HttpServer, *, rcvbuf: int = 0, tls: ssl.SSLContext | None = None
    ) -> tuple[Reader, Writer]:
        port = int(server.url.rsplit(":", 1)[1])
        if rcvbuf:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=16 << 10)
        else:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
            )
        self.writers.append(writer)
        return reader, writer

    async def send(self, server: HttpServer, data: bytes) -> tuple[Reader, Writer]:
        reader, writer = await self.connect(server)
        writer.write(data)
        await writer.drain()
        return reader, writer

    async def healthy(self, server: HttpServer) -> None:
        """A well-behaved client on its own connection is served normally."""
        reader, writer = await self.send(server, get("/healthy"))
        reply = await read_reply(reader)
        assert reply.status == 200
        assert reply.json()["path"] == "/healthy"
        writer.close()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), WAIT)
        for server in self.servers:
            await server.close(grace=0.5)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        await harness.close()


def routes(
    table: dict[str, Callable[[Request], Awaitable[Response | StreamingResponse]]],
) -> Callable[[Request], Awaitable[Response | StreamingResponse]]:
    async def handler(request: Request) -> Response | StreamingResponse:
        route = table.get(request.path)
        return await (route or echo)(request)

    return handler


# -- requests, keep-alive, pipelining -----------------------------------------------------


async def test_a_request_arrives_whole_and_the_connection_is_kept(h: Harness) -> None:
    server = await h.serve()
    assert server.url.startswith("http://127.0.0.1:")
    reader, writer = await h.send(
        server,
        b"POST /v1/a%2Fb/c?x=1&y=%20 HTTP/1.1\r\nHost: test\r\nX-Multi: one\r\n"
        b"x-multi: two\r\nX-Pad: value  \r\nContent-Length: 5\r\n\r\nhello",
    )
    reply = await read_reply(reader)
    assert reply.status == 200
    assert reply.headers["content-length"] == str(len(reply.body))
    assert "connection" not in reply.headers
    seen = reply.json()
    assert seen == {
        "method": "POST",
        "path": "/v1/a%2Fb/c",
        "query": "x=1&y=%20",
        "headers": {
            "host": "test",
            "x-multi": "one, two",
            "x-pad": "value",
            "content-length": "5",
        },
        "body": "hello",
        "client": "127.0.0.1",
        "version": "1.1",
    }
    writer.write(get("/again"))
    assert (await read_reply(reader)).json()["path"] == "/again"


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://example.com/p/q?x=1", "/p/q", "x=1"),
        ("http://example.com", "/", ""),
        ("/frag?a=b#top", "/frag", "a=b"),
        ("/plain", "/plain", ""),
    ],
)
async def test_request_targets_split_into_path_and_query(
    h: Harness, target: str, path: str, query: str
) -> None:
    server = await h.serve()
    reader, _ = await h.send(server, get(target))
    seen = (await read_reply(reader)).json()
    assert (seen["path"], seen["query"]) == (path, query)


async def test_connection_close_is_honoured(h: Harness) -> None:
    server = await h.serve()
    reader, _ = await h.send(server, get("/", "Connection: close"))
    reply = await read_reply(reader)
    assert reply.status == 200
    assert reply.headers["connection"] == "close"
    assert await is_closed(reader)


async def test_http10_closes_unless_asked_to_keep_alive(h: Harness) -> None:
    server = await h.serve()
    reader, _ = await h.send(server, get("/", version="1.0"))
    reply = await read_reply(reader)
    assert reply.json()["version"] == "1.0"
    assert reply.headers["connection"] == "close"
    assert await is_closed(reader)

    reader, writer = await h.send(server, get("/", "Connection: keep-alive", version="1.0"))
    reply = await read_reply(reader)
    assert reply.headers["connection"] == "keep-alive"
    writer.write(get("/second", "Connection: keep-alive", version="1.0"))
    assert (await read_reply(reader)).json()["path"] == "/second"


async def test_pipelined_requests_are_answered_in_order(h: Harness) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.05)
        return await echo(request)

    server = await h.serve(routes({"/slow": slow}))
    reader, _ = await h.send(
        server,
        get("/slow")
        + b"POST /post HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc"
        + get("/fast"),
    )
    paths = [(await read_reply(reader)).json()["path"] for _ in range(3)]
    assert paths == ["/slow", "/post", "/fast"]


async def test_a_deep_pipeline_is_answered_whole_and_in_order(h: Harness) -> None:
    # Far more requests than the server queues at once: it parses them as it catches up.
    seen: list[str] = []

    async def record(request: Request) -> Response:
        seen.append(request.path)
        await asyncio.sleep(0)
        return Response(200, body=request.path.encode())

    server = await h.serve(record)
    count = 600
    reader, _ = await h.send(server, b"".join(get(f"/{i}") for i in range(count)))
    bodies = [(await read_reply(reader)).body for _ in range(count)]
    assert bodies == [f"/{i}".encode() for i in range(count)]
    assert seen == [f"/{i}" for i in range(count)]


async def test_an_error_after_pipelined_requests_comes_after_their_answers(h: Harness) -> None:
    server = await h.serve()
    reader, _ = await h.send(server, get("/one") + get("/two") + b"NOT HTTP AT ALL\r\n\r\n")
    assert (await read_reply(reader)).json()["path"] == "/one"
    assert (await read_reply(reader)).json()["path"] == "/two"
    reply = await read_reply(reader)
    assert reply.status == 400
    assert await is_closed(reader)


# -- request bodies ---------------------------------------------------------------------


async def test_expect_100_continue_is_answered_before_the_body(h: Harness) -> None:
    server = await h.serve()
    reader, writer = await h.send(
        server,
        b"PUT /up HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"x" * 1000)
    reply = await read_reply(reader)
    assert reply.status == 200
    assert reply.json()["body"] == "x" * 1000


async def test_a_pipelined_100_continue_waits_for_the_answers_before_it(h: Harness) -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response(200, body=b"slow")

    server = await h.serve(routes({"/slow": slow}))
    reader, writer = await h.send(
        server,
        get("/slow")
        + b"PUT /up HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    await h.healthy(server)
    release.set()
    assert (await read_reply(reader)).body == b"slow"
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    assert (await read_reply(reader)).json()["body"] == "data"


async def test_a_client_leaving_cancels_its_handler(h: Harness) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(request: Request) -> Response:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    server = await h.serve(routes({"/stuck": stuck}))
    _, writer = await h.send(server, get("/stuck"))
    await asyncio.wait_for(entered.wait(), WAIT)
    writer.close()
    await asyncio.wait_for(cancelled.wait(), WAIT)
    await h.healthy(server)


async def test_expect_100_continue_over_the_limit_gets_413_at_once(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, _ = await h.send(
        server,
        b"PUT /up HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    reply = await read_reply(reader)  # no 100 Continue before it
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert await is_closed(reader)
    await h.healthy(server)


async def test_a_chunked_body_is_decoded_and_its_trailers_dropped(h: Harness) -> None:
    server = await h.serve()
    reader, writer = await h.connect(server)
    writer.write(b"POST /c HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n")
    await writer.drain()
    writer.write(b"0\r\nX-Trailer: t\r\n\r\n")
    seen = (await read_reply(reader)).json()
    assert seen["body"] == "abcdefg"
    assert "x-trailer" not in seen["headers"]  # type: ignore[operator]


async def test_a_declared_body_over_the_limit_gets_413_and_close(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, _ = await h.send(
        server,
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025,
    )
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (413, b"request body too large")
    assert await is_closed(reader)
    await h.healthy(server)


async def test_a_chunked_body_growing_past_the_limit_gets_413_and_close(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, writer = await h.send(
        server, b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await h.healthy(server)  # while that body is still arriving
    writer.write(b"200\r\n" + b"x" * 0x200 + b"\r\n")
    writer.write(b"200\r\n" + b"x" * 0x200 + b"\r\n")
    writer.write(b"1\r\nx\r\n")  # 1025 bytes decoded
    reply = await read_reply(reader)
    assert reply.status == 413
    assert await is_closed(reader)
    await h.healthy(server)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"1\r\nx\r\n" * 800, id="tiny-chunks"),
        pytest.param((b"4;" + b"e" * 40 + b"\r\nxxxx\r\n") * 200, id="bloated-extensions"),
        pytest.param(b"0\r\nX-Trailer: " + b"t" * 20_000 + b"\r\n", id="endless-trailer"),
    ],
)
async def test_a_chunked_body_with_bloated_framing_gets_413(h: Harness, chunks: bytes) -> None:
    # Each decodes to well under the limit, but costs far more on the wire or in work.
    server = await h.serve(limits=FAST)
    reader, writer = await h.send(
        server, b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(chunks)
    assert (await read_reply(reader)).status == 413
    assert await is_closed(reader)
    await h.healthy(server)


# -- hostile heads ----------------------------------------------------------------------


async def test_a_head_over_the_limit_gets_431_and_close(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, writer = await h.send(server, b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: ")
    await h.healthy(server)  # while that head is still arriving
    writer.write(b"y" * 100_000)  # one endless header: never buffered whole
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (431, b"request header too large")
    assert reply.headers["connection"] == "close"
    assert await is_closed(reader)
    await h.healthy(server)


async def test_many_small_headers_over_the_limit_get_431(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    headers = "".join(f"X-{i}: {i}\r\n" for i in range(400))
    reader, _ = await h.send(server, f"GET / HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode())
    assert (await read_reply(reader)).status == 431
    assert await is_closed(reader)


async def test_a_head_just_under_the_limit_is_served(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    request = get("/", "X-Pad: ")
    request = get("/", "X-Pad: " + "p" * (2048 - len(request)))
    assert len(request) == 2048
    reader, _ = await h.send(server, request)
    assert (await read_reply(reader)).status == 200


async def test_a_target_over_the_limit_gets_414_and_close(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, _ = await h.send(server, get("/" + "a" * 600))
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (414, b"request target too long")
    assert await is_closed(reader)
    await h.healthy(server)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage"),
        pytest.param(b"BREW / HTTP/1.1\r\nHost: test\r\n\r\n", id="unknown-method"),
        pytest.param(b"GET / HTTP/1.1\nHost: test\n\n", id="bare-lf"),
        pytest.param(b"GET / HTTP/1.2\r\nHost: test\r\n\r\n", id="http-1.2"),
        pytest.param(b"GET / HTTP/2.0\r\nHost: test\r\n\r\n", id="http-2.0"),
        pytest.param(b"GET / HTTP/0.9\r\nHost: test\r\n\r\n", id="http-0.9"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2-preface"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET /\x7f HTTP/1.1\r\nHost: test\r\n\r\n", id="control-in-target"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: test\r\nX: a\r\n b\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: test\r\nX: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: test\r\nX Y: a\r\n\r\n", id="space-in-name"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="cl-and-te",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            id="two-lengths",
        ),
        pytest.param(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: -1\r\n\r\n", id="neg-cl"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", id="connect"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: test\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
            b"Content-Length: 3\r\n\r\nabc",
            id="upgrade-with-body",
        ),
    ],
)
async def test_malformed_requests_get_400_and_close(h: Harness, data: bytes) -> None:
    server = await h.serve()
    reader, _ = await h.send(server, data)
    reply = await read_reply(reader)
    assert reply.status == 400
    assert reply.headers["connection"] == "close"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert len(reply.body) < 40  # a short message of its own, never the input
    assert await is_closed(reader)
    await h.healthy(server)


@pytest.mark.parametrize(
    "codings",
    [
        pytest.param(b"Transfer-Encoding: gzip\r\n", id="gzip"),
        pytest.param(b"Transfer-Encoding: gzip, chunked\r\n", id="gzip-chunked"),
        pytest.param(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", id="two"),
    ],
)
async def test_a_transfer_coding_besides_chunked_gets_501(h: Harness, codings: bytes) -> None:
    server = await h.serve()
    reader, _ = await h.send(
        server,
        b"POST / HTTP/1.1\r\nHost: test\r\n" + codings + b"\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (501, b"transfer coding not supported")
    assert await is_closed(reader)
    await h.healthy(server)


async def test_an_upgrade_request_is_served_as_plain_http(h: Harness) -> None:
    server = await h.serve()
    reader, writer = await h.send(
        server,
        get("/up", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMA")
        + get("/after"),
    )
    reply = await read_reply(reader)
    assert reply.status == 200  # never 101
    assert reply.json()["headers"]["upgrade"] == "h2c"  # type: ignore[index]
    assert (await read_reply(reader)).json()["path"] == "/after"
    writer.write(get("/websocket", "Connection: upgrade", "Upgrade: websocket"))
    assert (await read_reply(reader)).json()["path"] == "/websocket"


# -- slow clients -----------------------------------------------------------------------


async def test_a_head_that_does_not_complete_in_time_gets_408(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    started = time.monotonic()
    reader, writer = await h.send(server, b"GET / HTTP/1.1\r\nHost: test\r\n")
    for _ in range(3):  # slowloris: a header now and then never buys more time
        await h.healthy(server)
        writer.write(b"X-Drip: 1\r\n")
    reply = await read_reply(reader)
    elapsed = time.monotonic() - started
    assert (reply.status, reply.body) == (408, b"request head timed out")
    assert reply.headers["connection"] == "close"
    assert await is_closed(reader)
    assert 0.25 < elapsed < 2.0
    await h.healthy(server)


async def test_the_next_head_on_a_kept_connection_is_timed_too(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, writer = await h.send(server, get("/first"))
    assert (await read_reply(reader)).status == 200
    writer.write(b"GET /second HTTP/1.1\r\n")
    assert (await read_reply(reader)).status == 408
    assert await is_closed(reader)


async def test_a_body_that_does_not_complete_in_time_gets_408(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, _ = await h.send(
        server, b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc"
    )
    await h.healthy(server)
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (408, b"request body timed out")
    assert await is_closed(reader)
    await h.healthy(server)


async def test_an_idle_kept_connection_is_closed_silently(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, _ = await h.send(server, get())
    assert (await read_reply(reader)).status == 200
    started = time.monotonic()
    assert await reader.read() == b""  # no 408: nothing was asked
    assert 0.4 < time.monotonic() - started < 2.0


async def test_a_connection_that_sends_nothing_is_closed_silently(h: Harness) -> None:
    server = await h.serve(limits=FAST)
    reader, _ = await h.connect(server)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    assert time.monotonic() - started < 2.0


async def test_a_client_that_stops_reading_is_cut_off(h: Harness) -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"z" * 65536
        finally:
            closed.set()

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], endless())

    server = await h.serve(routes({"/stream": stream}), limits=FAST)
    _, writer = await h.connect(server, rcvbuf=4096)
    writer.write(get("/stream"))
    await asyncio.wait_for(closed.wait(), WAIT)  # aborted after idle_timeout stalled
    await h.healthy(server)


# -- handlers ---------------------------------------------------------------------------


async def test_a_handler_taking_too_long_gets_504_and_is_cancelled(h: Harness) -> None:
    cancelled = asyncio.Event()

    async def stuck(request: Request) -> Response:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    server = await h.serve(routes({"/stuck": stuck}), limits=FAST)
    reader, writer = await h.send(server, get("/stuck"))
    await h.healthy(server)  # while that handler hangs
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (504, b"request timed out")
    assert cancelled.is_set()
    writer.write(get("/after"))  # the connection stays usable
    assert (await read_reply(reader)).json()["path"] == "/after"


async def test_a_timeout_leaves_the_worker_task_uncancelled(h: Harness) -> None:
    # After a 504 the same worker runs the next pipelined handler: asyncio.timeout in it
    # must still work (the worker's cancel request was withdrawn).
    async def stuck(request: Request) -> Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def timed(request: Request) -> Response:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return Response(200, body=b"inner timeout")
        raise AssertionError("unreachable")

    server = await h.serve(routes({"/stuck": stuck, "/timed": timed}), limits=FAST)
    reader, _ = await h.send(server, get("/stuck") + get("/timed"))
    assert (await read_reply(reader)).status == 504
    assert (await read_reply(reader)).body == b"inner timeout"


async def test_a_handler_error_gets_500_logged_and_the_connection_lives(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("secret detail")

    server = await h.serve(routes({"/boom": boom}))
    reader, writer = await h.connect(server)
    with caplog.at_level(logging.ERROR, logger="gateway.http"):
        writer.write(get("/boom"))
        reply = await read_reply(reader)
    assert (reply.status, reply.body) == (500, b"internal error")
    assert "connection" not in reply.headers
    [record] = [r for r in caplog.records if r.name == "gateway.http"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    writer.write(get("/after"))
    assert (await read_reply(reader)).json()["path"] == "/after"


async def test_a_handler_returning_no_response_gets_500(h: Harness) -> None:
    async def wrong(request: Request) -> Response:
        return "ok"  # type: ignore[return-value]

    server = await h.serve(wrong)
    reader, _ = await h.send(server, get())
    assert (await read_reply(reader)).status == 500


async def test_response_headers_cannot_inject_lines(h: Harness) -> None:
    async def inject(request: Request) -> Response:
        return Response(200, [("location", "/x\r\nset-cookie: evil=1")], b"")

    server = await h.serve(routes({"/inject": inject}))
    reader, writer = await h.send(server, get("/inject"))
    reply = await read_reply(reader)
    assert reply.status == 500
    assert "set-cookie" not in reply.headers
    writer.write(get("/after"))
    assert (await read_reply(reader)).status == 200


async def test_the_server_owns_the_framing_headers(h: Harness) -> None:
    async def framing(request: Request) -> Response:
        return Response(
            201,
            [
                ("Content-Length", "999"),
                ("transfer-encoding", "chunked"),
                ("Connection", "close"),
                ("x-kept", "yes"),
            ],
            b"body",
        )

    server = await h.serve(framing, server_header="shopmesh-edge")
    reader, writer = await h.send(server, get())
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (201, b"body")
    assert reply.headers == {
        "x-kept": "yes",
        "server": "shopmesh-edge",
        "content-length": "4",
    }
    writer.write(get())  # still open: the handler's "connection: close" was not the server's
    assert (await read_reply(reader)).status == 201


async def test_head_gets_the_length_but_no_body(h: Harness) -> None:
    server = await h.serve()
    reader, writer = await h.send(server, b"HEAD /h HTTP/1.1\r\nHost: test\r\n\r\n")
    reply = await read_reply(reader, head=True)
    assert int(reply.headers["content-length"]) > 0
    writer.write(get("/next"))  # parses cleanly: no body bytes were sent
    assert (await read_reply(reader)).json()["path"] == "/next"


async def test_204_has_no_length_and_no_body(h: Harness) -> None:
    async def empty(request: Request) -> Response:
        return Response(204, (), b"ignored")

    server = await h.serve(routes({"/empty": empty}))
    reader, writer = await h.send(server, get("/empty"))
    status, headers = await read_head(reader)
    assert status == 204
    assert "content-length" not in headers
    writer.write(get("/next"))
    assert (await read_reply(reader)).json()["path"] == "/next"


async def test_errors_are_formatted_by_the_error_responder(h: Harness) -> None:
    def as_json(status: int, message: str) -> Response:
        body = json.dumps({"code": status, "message": message}).encode()
        return Response(status, [("content-type", "application/json")], body)

    server = await h.serve(limits=FAST, error_responder=as_json, server_header="edge")
    reader, _ = await h.send(server, get("/" + "a" * 600))
    reply = await read_reply(reader)
    assert reply.status == 414
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["server"] == "edge"
    assert reply.json() == {"code": 414, "message": "request target too long"}


async def test_a_failing_error_responder_falls_back_to_plain_text(h: Harness) -> None:
    def broken(status: int, message: str) -> Response:
        raise ValueError("responder bug")

    server = await h.serve(error_responder=broken)
    reader, _ = await h.send(server, b"GARBAGE\r\n\r\n")
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (400, b"malformed request")


# -- streaming --------------------------------------------------------------------------


async def test_a_stream_sends_each_chunk_as_it_comes(h: Harness) -> None:
    feed: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def chunks() -> AsyncIterator[bytes]:
        while (chunk := await feed.get()) is not None:
            yield chunk

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [("content-type", "text/event-stream")], chunks())

    server = await h.serve(routes({"/stream": stream}))
    reader, writer = await h.send(server, get("/stream"))
    status, headers = await read_head(reader)  # before any chunk exists
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    for data in (b"first", b"", b"second " * 100):
        await feed.put(data)
        if data:
            assert await read_chunk(reader) == data  # flushed before the next exists
    await feed.put(None)
    assert await read_chunk(reader) == b""
    writer.write(get("/after"))  # properly terminated: the connection is reusable
    assert (await read_reply(reader)).json()["path"] == "/after"


async def test_a_stream_that_fails_ends_the_connection_unterminated(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("upstream broke")

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], chunks())

    server = await h.serve(routes({"/stream": stream}))
    with caplog.at_level(logging.ERROR, logger="gateway.http"):
        reader, _ = await h.send(server, get("/stream"))
        status, _ = await read_head(reader)
        assert status == 200
        assert await read_chunk(reader) == b"partial"
        try:
            rest = await asyncio.wait_for(reader.read(), WAIT)
        except ConnectionResetError:
            rest = b""
    assert b"0\r\n\r\n" not in rest  # never a complete message
    assert any(
        r.name == "gateway.http" and r.exc_info and isinstance(r.exc_info[1], RuntimeError)
        for r in caplog.records
    )
    await h.healthy(server)


async def test_a_failing_http10_stream_ends_in_a_reset(h: Harness) -> None:
    # Its body is delimited by the close: a plain close would look complete.
    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("upstream broke")

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], chunks())

    server = await h.serve(routes({"/stream": stream}))
    reader, _ = await h.send(server, get("/stream", version="1.0"))
    with pytest.raises(ConnectionResetError):
        await read_to_end(reader)
    await h.healthy(server)


async def test_a_client_leaving_mid_stream_closes_the_iterator(h: Harness) -> None:
    closed = asyncio.Event()

    class Chunks:
        def __init__(self) -> None:
            self.sent = False

        def __aiter__(self) -> Chunks:
            return self

        async def __anext__(self) -> bytes:
            if not self.sent:
                self.sent = True
                return b"hello"
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def aclose(self) -> None:
            closed.set()

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], Chunks())

    server = await h.serve(stream)
    reader, writer = await h.send(server, get())
    await read_head(reader)
    assert await read_chunk(reader) == b"hello"
    writer.close()
    await asyncio.wait_for(closed.wait(), WAIT)


async def test_a_stream_waits_for_a_slow_reader(h: Harness) -> None:
    pulled = 0
    total = 2000
    size = 16 << 10

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(total):
            pulled += 1
            yield b"q" * size

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], chunks())

    server = await h.serve(stream)
    reader, writer = await h.connect(server, rcvbuf=4096)
    writer.write(get())
    await read_head(reader)
    # The client reads nothing more: the stream must stop being pulled (backpressure).
    last, steady = -1, 0
    while steady < 5:
        await asyncio.sleep(0.02)
        steady = steady + 1 if pulled == last else 0
        last = pulled
    assert 0 < pulled < total // 2
    received = 0
    while chunk := await read_chunk(reader):
        received += len(chunk)
    assert received == total * size


async def test_a_stream_to_an_http10_client_is_delimited_by_close(h: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], chunks())

    server = await h.serve(stream)
    reader, _ = await h.send(server, get(version="1.0"))
    reply = await read_reply(reader)
    assert "transfer-encoding" not in reply.headers
    assert reply.headers["connection"] == "close"
    assert reply.body == b"one,two"


async def test_a_stream_answering_head_sends_no_chunks(h: Harness) -> None:
    closed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"never sent"
        finally:
            closed.set()

    async def stream(request: Request) -> StreamingResponse:
        if request.method == "HEAD":
            return StreamingResponse(200, [], chunks())
        return await echo(request)  # type: ignore[return-value]

    server = await h.serve(stream)
    reader, writer = await h.send(server, b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n")
    status, headers = await read_head(reader)
    assert (status, headers["transfer-encoding"]) == (200, "chunked")
    writer.write(get("/next"))
    assert (await read_reply(reader)).json()["path"] == "/next"


# -- connections and shutdown -----------------------------------------------------------


async def test_connections_over_the_limit_get_503(h: Harness) -> None:
    server = await h.serve(limits=HttpLimits(max_connections=2))
    first = await h.send(server, get("/1"))
    second = await h.send(server, get("/2"))
    for reader, _ in (first, second):
        assert (await read_reply(reader)).status == 200
    reader, _ = await h.send(server, get("/3"))
    reply = await read_reply(reader)
    assert (reply.status, reply.body) == (503, b"too many connections")
    assert reply.headers["connection"] == "close"
    assert await is_closed(reader)
    for reader, writer in (first, second):  # the admitted ones are untouched
        writer.write(get("/again"))
        assert (await read_reply(reader)).status == 200
    first[1].close()
    for _ in range(100):  # its slot frees once the server sees it gone
        reader, writer = await h.send(server, get("/4"))
        if (await read_reply(reader)).status == 200:
            break
        writer.close()
        await asyncio.sleep(0.01)
    else:
        pytest.fail("a freed connection slot was not reused")


async def test_close_finishes_requests_in_flight_and_drops_idle_connections(
    h: Harness,
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await release.wait()
        return Response(200, body=b"finished")

    server = await h.serve(routes({"/slow": slow}))
    port = int(server.url.rsplit(":", 1)[1])
    idle_reader, _ = await h.send(server, get("/idle"))
    assert (await read_reply(idle_reader)).status == 200
    busy_reader, _ = await h.send(server, get("/slow"))
    await asyncio.wait_for(entered.wait(), WAIT)

    closing = asyncio.create_task(server.close(grace=WAIT))
    assert await is_closed(idle_reader)  # at once, while the other is still busy
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert not closing.done()
    release.set()
    reply = await read_reply(busy_reader)
    assert (reply.status, reply.body) == (200, b"finished")
    assert reply.headers["connection"] == "close"
    assert await is_closed(busy_reader)
    await asyncio.wait_for(closing, WAIT)


async def test_close_cancels_what_outlives_the_grace(h: Harness) -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def forever(request: Request) -> Response:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    server = await h.serve(forever)
    reader, _ = await h.send(server, get())
    await asyncio.wait_for(entered.wait(), WAIT)
    started = time.monotonic()
    await server.close(grace=0.1)
    assert time.monotonic() - started < 2.0
    assert cancelled.is_set()
    assert await is_closed(reader)


# -- other clients, TLS, uvloop ---------------------------------------------------------


async def test_http_client_interoperates(h: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for word in (b"alpha ", b"beta ", b"gamma"):
            yield word

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, [], chunks())

    server = await h.serve(routes({"/stream": stream}))
    port = int(server.url.rsplit(":", 1)[1])

    def client() -> list[tuple[int, bytes]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        try:
            out = []
            for method, path, body in (
                ("GET", "/a?b=c", None),
                ("POST", "/p", b"d" * 900),
                ("GET", "/stream", None),
                ("GET", "/last", None),
            ):
                conn.request(method, path, body=body)
                response = conn.getresponse()
                out.append((response.status, response.read()))
            return out
        finally:
            conn.close()

    replies = await asyncio.to_thread(client)
    assert [status for status, _ in replies] == [200, 200, 200, 200]
    assert json.loads(replies[0][1])["query"] == "b=c"
    assert json.loads(replies[1][1])["body"] == "d" * 900
    assert replies[2][1] == b"alpha beta gamma"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls(h: Harness, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    server = await h.serve(tls=server_context, limits=FAST)
    assert server.url.startswith("https://127.0.0.1:")
    reader, writer = await h.connect(server, tls=client_context)
    writer.write(get("/secure"))
    assert (await read_reply(reader)).json()["path"] == "/secure"
    writer.write(get("/" + "a" * 600))
    assert (await read_reply(reader)).status == 414
    assert await is_closed(reader)


def test_under_uvloop() -> None:
    """The core paths again, on a uvloop loop of their own."""

    async def scenario() -> None:
        harness = Harness()
        try:
            await test_a_request_arrives_whole_and_the_connection_is_kept(harness)
            await test_a_deep_pipeline_is_answered_whole_and_in_order(harness)
            await test_expect_100_continue_is_answered_before_the_body(harness)
            await test_a_chunked_body_growing_past_the_limit_gets_413_and_close(harness)
            await test_a_head_over_the_limit_gets_431_and_close(harness)
            await test_a_head_that_does_not_complete_in_time_gets_408(harness)
            await test_an_idle_kept_connection_is_closed_silently(harness)
            await test_a_handler_taking_too_long_gets_504_and_is_cancelled(harness)
            await test_malformed_requests_get_400_and_close(harness, b"GARBAGE\r\n\r\n")
            await test_a_client_leaving_cancels_its_handler(harness)
            await test_a_stream_sends_each_chunk_as_it_comes(harness)
            await test_a_failing_http10_stream_ends_in_a_reset(harness)
            await test_a_client_leaving_mid_stream_closes_the_iterator(harness)
            await test_a_stream_waits_for_a_slow_reader(harness)
            await test_a_client_that_stops_reading_is_cut_off(harness)
            await test_connections_over_the_limit_get_503(harness)
            await test_close_finishes_requests_in_flight_and_drops_idle_connections(harness)
        finally:
            await harness.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert type(runner.get_loop()).__module__.startswith("uvloop")
        runner.run(scenario())
