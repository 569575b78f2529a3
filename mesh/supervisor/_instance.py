"""One service instance as a child process: `python -m <module>` with its flags."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time

from mesh.config import MeshConfig, ServiceSpec
from mesh.errors import MeshError, RegistryUnavailable
from mesh.registry import Endpoint, EtcdClient, instance_key
from mesh.supervisor._health import check_health
from mesh.supervisor._process import log_tail, owned_command, stop_process

__all__ = ["InstanceProcess"]


class InstanceProcess:
    """Start it, wait until it is registered and SERVING, signal it, stop it."""

    def __init__(
        self,
        config: MeshConfig,
        spec: ServiceSpec,
        instance_id: str,
        etcd_endpoint: str,
        *,
        port: int = 0,
        metrics_port: int = 0,
        version: str | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.instance_id = instance_id
        self.etcd_endpoint = etcd_endpoint
        self.port = port
        self.metrics_port = metrics_port
        self.version = version or spec.version
        self.log_path = config.state_dir / "logs" / f"{instance_id}.log"
        self.endpoint: Endpoint | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def key(self) -> str:
        return instance_key(self.config.etcd.prefix, self.spec.name, self.instance_id)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        command = [
            sys.executable, "-m", self.spec.module,
            "--config", str(self.config.path),
            "--instance-id", self.instance_id,
            "--port", str(self.port),
            "--metrics-port", str(self.metrics_port),
            "--etcd", self.etcd_endpoint,
            "--version", self.version,
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *owned_command(command),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
            )

    async def wait_ready(self, etcd: EtcdClient, timeout: float = 30.0) -> Endpoint:
        """Wait until registered in etcd and SERVING; raises MeshError with the log's
        tail if the process exits or the time runs out."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.returncode is not None:
                raise MeshError(
                    f"{self.instance_id} exited with code {self.returncode} while starting:\n"
                    f"{log_tail(self.log_path)}"
                )
            endpoint = await self._registered(etcd)
            if (
                endpoint is not None
                and await check_health(self.config, endpoint.address) == "SERVING"
            ):
                self.endpoint = endpoint
                return endpoint
            await asyncio.sleep(0.1)
        raise MeshError(
            f"{self.instance_id} not ready within {timeout:.0f}s:\n{log_tail(self.log_path)}"
        )

    async def _registered(self, etcd: EtcdClient) -> Endpoint | None:
        try:
            value = await etcd.get(self.key)
            return Endpoint.from_json(value) if value is not None else None
        except (RegistryUnavailable, ValueError):
            return None

    def send_signal(self, signum: signal.Signals) -> None:
        assert self._process is not None, "not started"
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signum)

    async def wait(self) -> int:
        assert self._process is not None, "not started"
        return await self._process.wait()

    async def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` (default: drain + grace + 5 s)."""
        if self._process is None:
            return None
        server = self.config.server
        budget = timeout if timeout is not None else server.drain_delay + server.grace_period + 5
        return await stop_process(self._process, budget)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def __repr__(self) -> str:
        return f"InstanceProcess({self.instance_id!r}, pid={self._process.pid if self._process else None})"
