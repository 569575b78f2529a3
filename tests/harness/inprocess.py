"""In-process gRPC servers with real mTLS, and a fixed EndpointSource, for tests that
need a scriptable server rather than a service process."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

from mesh.identity import IdentityFiles, SpiffeId, server_credentials
from mesh.registry import Endpoint

DOMAIN, NAMESPACE = "shop.local", "default"
IDENTITY_OF = functools.partial(SpiffeId, DOMAIN, NAMESPACE)
"""The SPIFFE id of each name in the tests' mesh, as MeshClient's `identity_of`."""


class Details(grpc.HandlerCallDetails):
    """What grpc hands a generic handler or interceptor about a call."""

    def __init__(self, method: str, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata)


class StaticSource:
    """An EndpointSource that announces one fixed set and then never changes."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = frozenset(endpoints)

    async def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]:
        yield frozenset(e for e in self._endpoints if e.service == service)
        await asyncio.Event().wait()


async def start_server(certs_dir: Path, identity: str) -> tuple[grpc.aio.Server, str]:
    """An mTLS server on a free loopback port, not yet serving anything; returns it and
    its address. Add servicers (through a MeshInterceptor's registrar, to guard them)
    before awaiting `server.start()`."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(IdentityFiles(certs_dir, identity))
    )
    return server, f"127.0.0.1:{port}"
