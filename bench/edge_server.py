"""`python -m bench.edge_server --server aiohttp|uvicorn --descriptor-set FILE --upstream
HOST:PORT`: the edge's own Site and Edge, built as `python -m gateway` builds them
(plaintext upstream, no rate limit, no CORS), served by another HTTP server: the
server candidates of the edge rows (bench.edge).

Each adapter is thin: the server's request becomes a `gateway._http.Request` (raw
path and query, lower-cased headers with repeats joined, the whole body), Site.handle
answers it, and its Response (or StreamingResponse) is sent back as that server
sends one. Nothing else of the server is used: no router, middleware or app object.

- aiohttp: its low-level server (`aiohttp.web_server.Server`, the protocol under
  aiohttp.web's Application, with its C llhttp parser) on a plain loop.create_server.
- uvicorn: a raw ASGI callable, uvicorn with `http="httptools"` (the same llhttp
  parser as the edge's own server), no lifespan, no access log.

Neither is a dependency of the project: `make bench` installs the pinned versions
into the venv (bench.edge.CANDIDATE_PINS); without them, their rows are skipped.
Listens on 127.0.0.1, port 0 unless --port, prints the bound port as one line, and
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import uvloop

from gateway._descriptors import load_descriptor_set
from gateway._handler import Edge, EdgeOptions
from gateway._http import Request, Response
from gateway._openapi import openapi_document
from gateway._site import Site, SiteOptions

__all__ = ["SERVERS", "build_site", "joined_headers", "main", "split_target"]

SERVERS = ("aiohttp", "uvicorn")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def build_site(descriptor_set: Path, channel: grpc.aio.Channel) -> Site:
    """The Site `python -m gateway` serves for `descriptor_set` with its defaults."""
    surface = load_descriptor_set(descriptor_set)
    edge = Edge(surface, lambda service: channel, options=EdgeOptions())
    openapi = openapi_document(surface, title=descriptor_set.name, version="")
    return Site(edge, openapi, SiteOptions())


def joined_headers(pairs: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """Raw header pairs as the edge's server hands them over: names lower-cased,
    latin-1, a repeated header's values joined with ", "."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip(" \t")
        have = headers.get(name)
        headers[name] = value if have is None else f"{have}, {value}"
    return headers


def split_target(target: str) -> tuple[str, str]:
    """A raw request target's path and query ("" if none), without any fragment."""
    path, _, query = target.partition("#")[0].partition("?")
    return path, query


# -- aiohttp ----------------------------------------------------------------------------


async def _serve_aiohttp(site: Site, host: str, port: int, stop: asyncio.Event) -> None:
    from aiohttp import web, web_server  # type: ignore[import-not-found, unused-ignore]

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        path, query = split_target(request.raw_path)
        version = request.version
        answer = await site.handle(
            Request(
                request.method,
                path,
                query,
                joined_headers(request.raw_headers),
                await request.read(),
                request.remote or "",
                f"{version.major}.{version.minor}",
            )
        )
        if isinstance(answer, Response):
            return web.Response(
                status=answer.status, headers=list(answer.headers), body=answer.body
            )
        stream = web.StreamResponse(status=answer.status, headers=list(answer.headers))
        await stream.prepare(request)
        async for chunk in answer.chunks:
            if chunk:
                await stream.write(chunk)
        await stream.write_eof()
        return stream

    server = web_server.Server(handler)
    listening = await asyncio.get_running_loop().create_server(server, host, port)
    print(listening.sockets[0].getsockname()[1], flush=True)
    try:
        await stop.wait()
    finally:
        listening.close()
        await server.shutdown(2.0)
        await listening.wait_closed()


# -- uvicorn ----------------------------------------------------------------------------


def _asgi(site: Site) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        parts = []
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            parts.append(event.get("body", b""))
            if not event.get("more_body", False):
                break
        client = scope.get("client")
        answer = await site.handle(
            Request(
                scope["method"],
                scope["raw_path"].decode("latin-1"),
                scope["query_string"].decode("latin-1"),
                joined_headers(scope["headers"]),
                b"".join(parts),
                client[0] if client else "",
                scope["http_version"],
            )
        )
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        if isinstance(answer, Response):
            headers.append((b"content-length", str(len(answer.body)).encode()))
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
            return
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        async for chunk in answer.chunks:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


async def _serve_uvicorn(site: Site, host: str, port: int, stop: asyncio.Event) -> None:
    import uvicorn  # type: ignore[import-not-found, unused-ignore]

    config = uvicorn.Config(
        _asgi(site),
        host=host,
        port=port,
        loop="none",  # uvloop is running already
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving  # raises what stopped it
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    print(sock.getsockname()[1], flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving


# -- main -------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with grpc.aio.insecure_channel(args.upstream) as channel:
        site = build_site(args.descriptor_set, channel)
        serve = _serve_aiohttp if args.server == "aiohttp" else _serve_uvicorn
        await serve(site, args.host, args.port, stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_server", description=__doc__)
    parser.add_argument("--server", choices=SERVERS, required=True)
    parser.add_argument("--descriptor-set", type=Path, required=True)
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT", help="plaintext gRPC")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
