"""The process supervisor behind `meshctl up`: etcd plus every service instance, started,
watched until ready, and stopped together.

It talks to instances only over the network (etcd registration, gRPC health), never
by importing their code: each instance is `python -m <module>` in its own process.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from mesh.config import MeshConfig
from mesh.errors import MeshError
from mesh.identity import ensure_certificates
from mesh.registry import EtcdClient
from mesh.state import InstanceRecord, MeshState, clear_state, read_state, write_state
from mesh.supervisor._etcd_server import EtcdServer
from mesh.supervisor._instance import InstanceProcess
from mesh.supervisor._process import relative_path

__all__ = ["MeshAlreadyRunning", "Supervisor"]

Report = Callable[[str], None]


class MeshAlreadyRunning(MeshError):
    def __init__(self, pid: int) -> None:
        self.pid = pid
        super().__init__(
            f"a mesh is already running from this folder (supervisor pid {pid}); run `meshctl down` first"
        )


class Supervisor:
    """Start with `start()`, end with `stop()` (always call it). An instance that dies
    meanwhile is reported, not restarted."""

    def __init__(self, config: MeshConfig, report: Report) -> None:
        self.config = config
        self._report = report
        self._etcd_server: EtcdServer | None = None
        self.instances: list[InstanceProcess] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self.etcd_endpoint = config.etcd.endpoint

    async def start(self, timeout: float = 60.0) -> None:
        """Certificates, etcd, then every instance; returns once all serve. On failure,
        everything started so far is stopped before the error is raised."""
        previous = read_state(self.config.state_dir)
        if (
            previous is not None
            and previous.supervisor_alive()
            and previous.supervisor_pid != os.getpid()
        ):
            raise MeshAlreadyRunning(previous.supervisor_pid)
        try:
            self._certificates()
            await self._start_etcd()
            await self._spawn_all()
            self._save(ready=False)
            await self._wait_all_ready(timeout)
            self._save(ready=True)
        except BaseException:
            await self.stop()
            raise

    async def _wait_all_ready(self, timeout: float) -> None:
        """Wait for every instance; the first that fails cancels the waits for the others
        and its error is raised."""
        try:
            async with EtcdClient(self.etcd_endpoint) as etcd, asyncio.TaskGroup() as waits:
                for instance in self.instances:
                    waits.create_task(self._wait_ready(etcd, instance, timeout))
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None

    def _certificates(self) -> None:
        config = self.config
        made = ensure_certificates(
            config.certs_dir, config.trust_domain, config.namespace, config.all_identities()
        )
        created = [status.name for status in made if status.action != "kept"]
        detail = f"new: {', '.join(created)}" if created else "all kept"
        self._report(
            f"certificates  {relative_path(config.certs_dir)}/ ({len(made)} files, {detail})"
        )

    async def _start_etcd(self) -> None:
        if self.etcd_endpoint:
            self._report(f"etcd          {self.etcd_endpoint} (external)")
            return
        server = EtcdServer(
            self.config.state_dir / "etcd",
            host=self.config.host,
            client_port=self.config.etcd.client_port,
            log_path=self.config.state_dir / "logs" / "etcd.log",
        )
        started = time.monotonic()
        self._etcd_server = server  # before it starts: stop() must see it if start is cut short
        await server.start()
        self.etcd_endpoint = server.endpoint
        self._report(f"etcd          {server.endpoint} ({time.monotonic() - started:.1f}s)")

    async def _spawn_all(self) -> None:
        for spec in self.config.services.values():
            for index in range(spec.replicas):
                instance = InstanceProcess(
                    self.config,
                    spec,
                    f"{spec.name}-{index + 1}",
                    self.etcd_endpoint,
                    port=spec.port + index if spec.port else 0,
                    metrics_port=spec.metrics_port + index if spec.metrics_port else 0,
                )
                self.instances.append(instance)  # before it starts, as for etcd above
                await instance.start()
                self._watchers.append(asyncio.create_task(self._watch(instance)))

    async def _wait_ready(
        self, etcd: EtcdClient, instance: InstanceProcess, timeout: float
    ) -> None:
        started = time.monotonic()
        endpoint = await instance.wait_ready(etcd, timeout)
        elapsed = time.monotonic() - started
        self._report(f"{instance.instance_id:<13} {endpoint.address} ({elapsed:.1f}s)")

    async def _watch(self, instance: InstanceProcess) -> None:
        code = await instance.wait()
        if not self._stopping:
            self._report(
                f"! {instance.instance_id} exited with code {code}; see {relative_path(instance.log_path)}"
            )

    def _save(self, *, ready: bool) -> None:
        records = tuple(
            InstanceRecord(
                service=i.spec.name,
                instance_id=i.instance_id,
                pid=i.pid,
                port=i.port,
                metrics_port=i.metrics_port,
                log=str(i.log_path),
            )
            for i in self.instances
        )
        etcd_pid = self._etcd_server.pid if self._etcd_server else None
        state = MeshState(os.getpid(), self.etcd_endpoint, etcd_pid, ready, records)
        write_state(self.config.state_dir, state)

    async def stop(self) -> None:
        """Stop every instance (gracefully, in parallel), then etcd; forget the state."""
        self._stopping = True
        codes = await asyncio.gather(*(instance.stop() for instance in self.instances))
        for instance, code in zip(self.instances, codes, strict=True):
            if code not in (0, None):
                self._report(f"! {instance.instance_id} stopped with code {code}")
        for watcher in self._watchers:
            watcher.cancel()
        self.instances.clear()
        if self._etcd_server is not None:
            await self._etcd_server.stop()
            self._etcd_server = None
        state = read_state(self.config.state_dir)
        if state is not None and state.supervisor_pid == os.getpid():
            clear_state(self.config.state_dir)
