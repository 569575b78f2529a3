"""The embedded event broker: a NATS server with JetStream on loopback, for `meshctl
up` and for tests. Ready once its monitoring port's /healthz answers ok."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from mesh.errors import MeshError
from mesh.process import ServerProcess, find_binary, free_port, log_tail, owned_command

__all__ = ["NatsServer"]

_HEALTH = "/healthz"
"""Plain /healthz is the strictest of its forms (`?js-enabled-only=true` asks only
whether JetStream is on, `?js-server-only=true` skips accounts, streams and consumers);
it answers {"status": "ok"} about 0.1 s after a start here, a restart on a store too."""


class NatsServer(ServerProcess):
    """Runs `nats-server -js` with its JetStream store in `store_dir`.

    Ports of 0 are chosen free at the first start and kept for restarts, so clients
    that reconnect to `endpoint` find the restarted server, with the same store.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(host)
        self.log_path = log_path or store_dir.parent / "nats.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        """host:port of its client listener."""
        return f"{self.host}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        await self.spawn()
        await self.wait_healthy(timeout)

    async def spawn(self) -> None:
        """Start the process; `wait_healthy()` then waits until it serves."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            find_binary("nats-server"),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--server_name", "shopmesh",
            "--addr", self.host,  # the monitoring port binds here too
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *owned_command(command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until /healthz says ok; raises MeshError (with the log's tail) if the process
        exits first, or stops it and raises if it is not healthy within `timeout` s."""
        assert self._process is not None, "not started"
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self._process.returncode is not None:
                raise MeshError(
                    f"nats-server exited with {self._process.returncode} on {self.endpoint}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if await asyncio.to_thread(self._healthy):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise MeshError(
            f"nats-server on {self.endpoint} not healthy within {timeout:.0f}s:\n"
            f"{log_tail(self.log_path)}"
        )

    def _healthy(self) -> bool:
        url = f"http://{self.host}:{self.monitor_port}{_HEALTH}"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return bool(json.load(response).get("status") == "ok")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
