"""One service instance as a child process: `python -m <module>` with its flags, its
output copied into `<state_dir>/logs/<instance id>.log` as JSON lines only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Protocol

from mesh.config import MeshConfig, ServiceSpec
from mesh.errors import MeshError, RegistryUnavailable
from mesh.process import log_tail, owned_command, stop_process
from mesh.registry import Endpoint, EtcdClient, instance_key
from mesh.supervisor._health import check_health
from mesh.supervisor._loglines import LineSplitter, stderr_record, stdout_record
from mesh.tasks import cancel_and_wait

__all__ = ["InstanceProcess"]


class ToRecord(Protocol):
    """stdout_record or stderr_record."""

    def __call__(self, line: bytes, *, now: float, fields: Mapping[str, str]) -> bytes: ...


_READ_SIZE = 64 * 1024
_OUTPUT_DRAIN = 5.0
"""Seconds to wait, after the child has exited, for its output to reach EOF; only a
process it started and left running can hold its pipes open longer."""


_INSTANCE_ENV = {
    "PYTHONUNBUFFERED": "1",
    # An instance forks its sidecar's Envoy while gRPC threads run (etcd watches, calls).
    # gRPC's fork handlers then crashed the child before its exec, SIGSEGV, in 2 of 8
    # starts of the edge (0 of 10 without them); an instance forks only to exec.
    "GRPC_ENABLE_FORK_SUPPORT": "false",
}


class InstanceProcess:
    """Start it, wait until it is registered and SERVING, signal it, stop it.

    The child's stdout and stderr are pipes that two copier tasks, owned by this object,
    read to EOF into the log: stdout's JSON lines as they are, every stderr line wrapped
    into a JSON object (see `_loglines`). `wait()` and `stop()` return once both have
    copied everything the child wrote.
    """

    def __init__(
        self,
        config: MeshConfig,
        spec: ServiceSpec,
        instance_id: str,
        etcd_endpoint: str,
        *,
        port: int = 0,
        metrics_port: int = 0,
        envoy_admin_port: int = 0,
        version: str | None = None,
        events_endpoint: str | None = None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.instance_id = instance_id
        self.etcd_endpoint = etcd_endpoint
        self.events_endpoint = events_endpoint
        self.port = port
        self.metrics_port = metrics_port
        self.envoy_admin_port = envoy_admin_port
        self.version = version or spec.version
        self.log_path = config.state_dir / "logs" / f"{instance_id}.log"
        self.endpoint: Endpoint | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._copiers: list[asyncio.Task[None]] = []

    @property
    def key(self) -> str:
        return instance_key(self.config.etcd.prefix, self.spec.name, self.instance_id)

    @property
    def started(self) -> bool:
        return self._process is not None

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
            "--envoy-admin-port", str(self.envoy_admin_port),
            "--etcd", self.etcd_endpoint,
            "--version", self.version,
            *(("--events", self.events_endpoint) if self.events_endpoint else ()),
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            *owned_command(command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **_INSTANCE_ENV},
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
        )
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        # One unbuffered append-mode file per stream: each write of whole lines lands intact.
        self._copiers = [
            asyncio.create_task(
                self._copy(stream, self.log_path.open("ab", buffering=0), to_record),
                name=f"{self.instance_id} {to_record.__name__}",
            )
            for stream, to_record in (
                (self._process.stdout, stdout_record),
                (self._process.stderr, stderr_record),
            )
        ]

    async def _copy(
        self, stream: asyncio.StreamReader, log: io.FileIO, to_record: ToRecord
    ) -> None:
        """Copy `stream` into `log` until EOF, one JSON line per line; closes `log`."""
        fields = {"service": self.spec.name, "instance": self.instance_id}
        splitter = LineSplitter()
        with log:
            while chunk := await stream.read(_READ_SIZE):
                self._write(log, splitter.feed(chunk), to_record, fields)
            self._write(log, splitter.end(), to_record, fields)

    @staticmethod
    def _write(
        log: io.FileIO, lines: list[bytes], to_record: ToRecord, fields: Mapping[str, str]
    ) -> None:
        if not lines:
            return
        now = time.time()
        records = b"".join(to_record(line, now=now, fields=fields) + b"\n" for line in lines)
        # A full disk must not stop the reading: the child would block on its pipe.
        with contextlib.suppress(OSError):
            log.write(records)

    async def _output_copied(self) -> None:
        """Wait until the copiers have reached EOF (bounded: see _OUTPUT_DRAIN)."""
        if not self._copiers:
            return
        _, pending = await asyncio.wait(self._copiers, timeout=_OUTPUT_DRAIN)
        for task in pending:
            await cancel_and_wait(task)

    async def wait_ready(self, etcd: EtcdClient, timeout: float = 30.0) -> Endpoint:
        """Wait until registered in etcd and SERVING; raises MeshError with the log's
        tail if the process exits or the time runs out."""
        until = time.monotonic() + timeout
        seen = "not registered"  # what the last look found, for the error
        while time.monotonic() < until:
            if self.returncode is not None:
                await self._output_copied()  # its last words belong in the tail
                raise MeshError(
                    f"{self.instance_id} exited with code {self.returncode} while starting:\n"
                    f"{log_tail(self.log_path)}"
                )
            endpoint = await self._registered(etcd)
            if endpoint is not None:
                health = await check_health(self.config, endpoint.address)
                if health == "SERVING":
                    self.endpoint = endpoint
                    return endpoint
                seen = f"registered at {endpoint.address}, health {health}"
            await asyncio.sleep(0.1)
        raise MeshError(
            f"{self.instance_id} not ready within {timeout:.0f}s ({seen}):\n"
            f"{log_tail(self.log_path)}"
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
        """Until the process has exited and its output is in the log; its exit code."""
        assert self._process is not None, "not started"
        code = await self._process.wait()
        await self._output_copied()
        return code

    async def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` (default: drain + grace + 5 s); returns
        once its output is in the log."""
        if self._process is None:
            return None
        server = self.config.server
        budget = timeout if timeout is not None else server.drain_delay + server.grace_period + 5
        code = await stop_process(self._process, budget)
        await self._output_copied()
        return code

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def __repr__(self) -> str:
        return f"InstanceProcess({self.instance_id!r}, pid={self._process.pid if self._process else None})"
