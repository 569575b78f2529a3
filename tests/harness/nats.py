"""A NATS server with JetStream for tests: free loopback ports, its store and log in a
folder of the test's, stopped (terminate, wait, kill) however the test ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from mesh.supervisor import NatsServer, log_tail

__all__ = ["nats_server", "server_log"]


@contextlib.asynccontextmanager
async def nats_server(root: Path) -> AsyncIterator[NatsServer]:
    """A started NatsServer with its store in `root`/store and log in `root`/nats.log;
    `.endpoint` is where clients connect. `stop()` and `start()` restart it on the same
    ports and store (an outage); it is stopped at the end."""
    server = NatsServer(root / "store", log_path=root / "nats.log")
    try:
        await server.start(timeout=20)
        yield server
    finally:
        await server.stop()


def server_log(server: NatsServer) -> str:
    """The end of `server`'s log, for a failure message."""
    return log_tail(server.log_path, 30)
