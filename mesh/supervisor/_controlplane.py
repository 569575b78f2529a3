"""The xDS control plane as a child process (`python -m mesh.xds`), ready once it
answers gRPC health over mTLS. Its port is chosen once (when mesh.yaml says 0) and kept
for restarts: every sidecar's bootstrap holds it."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from mesh.config import MeshConfig
from mesh.errors import MeshError
from mesh.process import ServerProcess, free_port, log_tail, owned_command
from mesh.supervisor._health import check_health

__all__ = ["ControlPlaneServer"]


class ControlPlaneServer(ServerProcess):
    """Start it with `spawn()` and `wait_healthy()`; `wait()` until it exits."""

    def __init__(self, config: MeshConfig, etcd_endpoint: str, log_path: Path) -> None:
        self._config = config
        self._etcd_endpoint = etcd_endpoint
        self.port = config.controlplane.port or free_port(config.host)
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"{self._config.host}:{self.port}"

    def entrypoint(self) -> list[str]:
        """The command that runs the control plane, before its flags."""
        return [sys.executable, "-m", "mesh.xds"]

    async def spawn(self) -> None:
        command = [
            *self.entrypoint(),
            "--config", str(self._config.path),
            "--etcd", self._etcd_endpoint,
            "--port", str(self.port),
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *owned_command(command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until it answers SERVING; raises MeshError with its log's tail if it exits
        first or is not serving within `timeout` s."""
        assert self._process is not None, "not started"
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self._process.returncode is not None:
                raise MeshError(
                    f"the control plane exited with {self._process.returncode}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if await check_health(self._config, self.endpoint, timeout=0.5) == "SERVING":
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise MeshError(
            f"the control plane on {self.endpoint} not serving within {timeout:.0f}s:\n"
            f"{log_tail(self.log_path)}"
        )
