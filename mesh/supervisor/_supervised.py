"""Processes under supervision: a service instance, the embedded etcd, the event
broker or the control plane, started again with backoff (see `_restart`) whenever it
dies without the supervisor having stopped it.

Each object owns one task that watches its process (`supervise()` starts it,
`unsupervise()` ends it): a process is treated as crashed only while that task runs,
so whoever stops a process on purpose (`stop()`, a rolling `restart()`) first ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from mesh.config import MeshConfig, ServiceSpec
from mesh.errors import MeshError
from mesh.process import relative_path
from mesh.registry import Endpoint, EtcdClient
from mesh.state import InstanceRecord
from mesh.supervisor._instance import InstanceProcess
from mesh.supervisor._restart import CRASHLOOP, RESTARTING, CrashTracker, RestartPolicy
from mesh.tasks import cancel_and_wait

__all__ = [
    "RUNNING",
    "SERVING",
    "STARTING",
    "SupervisedInstance",
    "SupervisedServer",
    "instance_names",
    "instance_record",
]

STARTING = "STARTING"  # started, not SERVING (an instance) or healthy (etcd) yet
SERVING = "SERVING"  # an instance that has been SERVING since it last started
RUNNING = "RUNNING"  # etcd, healthy since it last started
_WAITING = (RESTARTING, CRASHLOOP)

Report = Callable[[str], None]
Changed = Callable[[], None]
Progress = Callable[[str], Awaitable[None]]


def instance_names(spec: ServiceSpec) -> list[tuple[str, str]]:
    """(instance id, version) of each instance of `spec`, in port order: <name>-<n> for
    the first version, <name>-<version>-<n> for the others."""
    names: list[tuple[str, str]] = []
    for rank, (version, replicas) in enumerate(spec.running_versions.items()):
        stem = spec.name if rank == 0 else f"{spec.name}-{version}"
        names.extend((f"{stem}-{n}", version) for n in range(1, replicas + 1))
    return names


def instance_record(
    process: InstanceProcess, *, state: str, restarts: int = 0, running: bool = True
) -> InstanceRecord:
    """What state.json says of `process`; `running` False when it has ended."""
    endpoint = process.endpoint if running else None
    metrics = endpoint.metadata.get("metrics") if endpoint else None
    return InstanceRecord(
        service=process.spec.name,
        instance_id=process.instance_id,
        pid=process.pid if running and process.started else None,
        port=process.port,
        metrics_port=process.metrics_port,
        log=str(process.log_path),
        address=endpoint.address if endpoint else "",
        metrics=f"http://{metrics}/metrics" if metrics else "",
        version=process.version,
        dataplane=process.config.dataplane,
        envoy_admin=endpoint.metadata.get("envoy_admin", "") if endpoint else "",
        restarts=restarts,
        state=state,
    )


class SupervisedInstance:
    """One instance (id, ports) of a service: its current process, restarted when it
    dies. `state` is STARTING, SERVING, or RESTARTING / CRASHLOOP while it waits out a
    backoff; `restarts` counts the restarts after crashes (not rolling restarts)."""

    def __init__(
        self,
        config: MeshConfig,
        spec: ServiceSpec,
        instance_id: str,
        etcd_endpoint: str,
        *,
        port: int,
        metrics_port: int,
        envoy_admin_port: int = 0,
        version: str | None = None,
        events_endpoint: str | None = None,
        report: Report,
        changed: Changed,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.spec = spec
        self.instance_id = instance_id
        self._etcd_endpoint = etcd_endpoint
        self._port = port
        self._metrics_port = metrics_port
        self._envoy_admin_port = envoy_admin_port
        self._version = version
        self._events_endpoint = events_endpoint
        self._report = report
        self._changed = changed
        self._tracker = CrashTracker(policy or RestartPolicy(), clock)
        self._watcher: asyncio.Task[None] | None = None
        self.process = self._new_process()
        self.state = STARTING
        self.restarts = 0

    def _new_process(self) -> InstanceProcess:
        return InstanceProcess(
            self.config,
            self.spec,
            self.instance_id,
            self._etcd_endpoint,
            port=self._port,
            metrics_port=self._metrics_port,
            envoy_admin_port=self._envoy_admin_port,
            version=self._version,
            events_endpoint=self._events_endpoint,
        )

    def record(self) -> InstanceRecord:
        return instance_record(
            self.process,
            state=self.state,
            restarts=self.restarts,
            running=self.state not in _WAITING,
        )

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    async def start(self) -> None:
        """Start a new process; the current one must have ended (or never started).
        The new one is current even if its start fails or is cancelled, so that no
        child goes untracked; supervision treats a failed start as a crash."""
        self.process, self.state = self._new_process(), STARTING
        try:
            await self.process.start()
        finally:
            self._changed()

    async def wait_ready(self, etcd: EtcdClient, timeout: float) -> Endpoint:
        """Until registered and SERVING (see InstanceProcess.wait_ready)."""
        endpoint = await self.process.wait_ready(etcd, timeout)
        self.state = SERVING
        self._tracker.ready()
        self._changed()
        return endpoint

    def supervise(self, etcd: EtcdClient) -> None:
        """From now on, restart the process whenever it dies."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(
                self._supervise(etcd), name=f"supervise {self.instance_id}"
            )

    async def unsupervise(self) -> None:
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
            self._watcher = None

    async def restart(self, etcd: EtcdClient, timeout: float, progress: Progress) -> Endpoint:
        """A rolling restart's step: stop the process gracefully and start it again on
        its ports, until SERVING; neither a crash nor a restart in `restarts`. Supervision
        resumes afterwards, whatever happened."""
        await self.unsupervise()
        try:
            if self.process.started and self.process.returncode is None:
                await progress(
                    f"{self.instance_id}: stopping (pid {self.process.pid}): NOT_SERVING, "
                    f"leaving etcd, draining {self.config.server.drain_delay:g}s"
                )
                code = await self.process.stop()
                await progress(f"{self.instance_id}: stopped (exit code {code})")
            await self.start()
            await progress(f"{self.instance_id}: started again (pid {self.process.pid})")
            endpoint = await self.wait_ready(etcd, timeout)
            await progress(f"{self.instance_id}: SERVING at {endpoint.address}")
            return endpoint
        finally:
            self.supervise(etcd)

    async def stop(self) -> int | None:
        """Stop for good: gracefully, as a rolling restart does, and not restarted."""
        await self.unsupervise()
        return await self.process.stop()

    async def _supervise(self, etcd: EtcdClient) -> None:
        while True:
            code = await self._until_exit(etcd)
            await self._restart_after_crash(code)

    async def _until_exit(self, etcd: EtcdClient) -> int | None:
        """Wait for the current process to end, noting when it turns SERVING meanwhile."""
        if not self.process.started:
            return None  # its start failed: retried like a crash
        serving = None if self.state == SERVING else asyncio.create_task(self._until_serving(etcd))
        try:
            return await self.process.wait()
        finally:
            if serving is not None:
                await cancel_and_wait(serving)

    async def _until_serving(self, etcd: EtcdClient) -> None:
        while self.process.returncode is None:
            with contextlib.suppress(MeshError):  # not ready yet, or it ended: _until_exit sees
                endpoint = await self.wait_ready(etcd, timeout=60)
                self._report(
                    f"{self.instance_id} SERVING again at {endpoint.address} (pid {self.process.pid})"
                )
                return

    async def _restart_after_crash(self, code: int | None) -> None:
        delay = self._tracker.crashed()
        self.state = self._tracker.waiting_state
        self._changed()
        loop = f", crash {self._tracker.crashes} in a row" if self.state == CRASHLOOP else ""
        self._report(
            f"! {self.instance_id} exited with code {code}{loop}; restarting in {delay:g}s "
            f"(see {relative_path(self.process.log_path)})"
        )
        await asyncio.sleep(delay)
        self.restarts += 1
        try:
            await self.start()
        except OSError as error:
            self._report(f"! {self.instance_id} could not be started again: {error}")
            return
        self._report(
            f"{self.instance_id} restarted (restart {self.restarts}, pid {self.process.pid})"
        )


class Server(Protocol):
    """A mesh server process the supervisor restarts in place: the embedded etcd, the
    event broker, the control plane."""

    log_path: Path

    @property
    def endpoint(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    async def spawn(self) -> None: ...

    async def wait_healthy(self, timeout: float = 30.0) -> None: ...

    async def wait(self) -> int | None: ...

    async def stop(self, timeout: float = 5.0) -> None: ...


class SupervisedServer:
    """A server process (the embedded etcd, the broker or the control plane, as `name`
    says), restarted on its ports (and data dir) when it dies. `state` is STARTING, RUNNING,
    or RESTARTING / CRASHLOOP while it waits out a backoff."""

    def __init__(
        self,
        server: Server,
        *,
        name: str = "etcd",
        report: Report,
        changed: Changed,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.name = name
        self._report = report
        self._changed = changed
        self._tracker = CrashTracker(policy or RestartPolicy(), clock)
        self._watcher: asyncio.Task[None] | None = None
        self.state = STARTING
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self.state in _WAITING else self.server.pid

    async def start(self) -> None:
        await self.server.spawn()
        self._changed()  # its pid, before it is healthy
        await self.server.wait_healthy()
        self.state = RUNNING
        self._tracker.ready()
        self._changed()

    def supervise(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._supervise(), name=f"supervise {self.name}")

    async def unsupervise(self) -> None:
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
            self._watcher = None

    async def stop(self) -> None:
        await self.unsupervise()
        await self.server.stop()

    async def _supervise(self) -> None:
        while True:
            code = await self.server.wait()
            delay = self._tracker.crashed()
            self.state = self._tracker.waiting_state
            self._changed()
            self._report(
                f"! {self.name} exited with code {code}; restarting in {delay:g}s "
                f"on {self.server.endpoint} (see {relative_path(self.server.log_path)})"
            )
            await asyncio.sleep(delay)
            self.restarts += 1
            self.state = STARTING
            try:
                await self.start()
            except (MeshError, OSError) as error:
                self._report(f"! {self.name} did not start again: {str(error).splitlines()[0]}")
                continue
            self._report(f"{self.name} restarted (restart {self.restarts}, pid {self.server.pid})")
