"""An etcd server process on loopback, for `meshctl up` and for tests."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from mesh.errors import MeshError
from mesh.process import ServerProcess, find_binary, free_port, log_tail, owned_command

__all__ = ["EtcdServer"]


class EtcdServer(ServerProcess):
    """Runs `etcd` with its data in `data_dir`, ready once /health says so.

    Ports of 0 are chosen free at the first start and kept for restarts, so clients
    configured with `endpoint` reach the restarted server (which `start()` again gives,
    on the same data dir).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        client_port: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = free_port(host)
        self.log_path = log_path or data_dir.parent / "etcd.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    async def start(self, timeout: float = 30.0) -> None:
        await self.spawn()
        await self.wait_healthy(timeout)

    async def spawn(self) -> None:
        """Start the process; `wait_healthy()` then waits until it serves."""
        client, peer = f"http://{self.endpoint}", f"http://{self.host}:{self.peer_port}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *owned_command([find_binary("etcd")]),
                "--name",
                "shopmesh",
                "--data-dir",
                str(self.data_dir),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"shopmesh={peer}",
                "--log-level",
                "warn",
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until /health says so; raises MeshError (with the log's tail) if the process
        exits first, or stops it and raises if it is not healthy within `timeout` s."""
        assert self._process is not None, "not started"
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self._process.returncode is not None:
                raise MeshError(
                    f"etcd exited with {self._process.returncode} on {self.endpoint}:\n{log_tail(self.log_path)}"
                )
            if await asyncio.to_thread(self._healthy):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise MeshError(
            f"etcd on {self.endpoint} not healthy within {timeout:.0f}s:\n{log_tail(self.log_path)}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=0.5) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False

    async def restart(self, *, wipe: bool = False) -> None:
        """Stop, optionally lose all data (leases included), start again on the same ports."""
        await self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        await self.start()

    async def __aenter__(self) -> EtcdServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
