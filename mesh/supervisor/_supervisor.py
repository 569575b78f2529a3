"""The process supervisor behind `meshctl up`: etcd, the event broker, the control
plane (with sidecars) and every service instance, started, watched until ready, kept
running, and stopped together. (Each instance runs its own sidecar, as a pod does: see mesh.server.)

Once the mesh is up, a process that dies (an instance, the embedded etcd or broker) is started
again with exponential backoff, as Kubernetes restarts a crashed container (see
`_restart` for the delays and `_supervised` for who owns each process). state.json is
rewritten on every change. A control socket (see `_control`) takes meshctl's requests
for a rolling restart, which only the supervisor can do, since it owns the processes.

It talks to instances only over the network (etcd registration, gRPC health), never
by importing their code: each instance is `python -m <module>` in its own process.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from mesh.config import MeshConfig
from mesh.errors import ConfigError, MeshError, RegistryUnavailable
from mesh.identity import ensure_certificates
from mesh.process import relative_path
from mesh.registry import EtcdClient, authz_key, encode_authz, traffic_key
from mesh.state import MeshState, clear_state, read_state, write_state
from mesh.supervisor._control import (
    ControlEvent,
    ControlRequest,
    ControlServer,
    Progress,
    socket_path,
)
from mesh.supervisor._controlplane import ControlPlaneServer
from mesh.supervisor._etcd_server import EtcdServer
from mesh.supervisor._health import check_health
from mesh.supervisor._instance import InstanceProcess
from mesh.supervisor._nats_server import NatsServer
from mesh.supervisor._restart import RestartPolicy
from mesh.supervisor._supervised import (
    SERVING,
    STARTING,
    SupervisedInstance,
    SupervisedServer,
    instance_names,
    instance_record,
)

__all__ = ["MeshAlreadyRunning", "Supervisor"]

Report = Callable[[str], None]


class MeshAlreadyRunning(MeshError):
    def __init__(self, pid: int) -> None:
        self.pid = pid
        super().__init__(
            f"a mesh is already running from this folder (supervisor pid {pid}); run `meshctl down` first"
        )


class _StepFailed(MeshError):
    """A rolling restart's step failed; `log` is the tail of the log that says why."""

    def __init__(self, message: str, log: str) -> None:
        self.log = log
        super().__init__(message)


def _reason(error: Exception) -> str:
    """An error's first line: a failed step's log tail is sent apart from its reason."""
    return str(error).splitlines()[0].rstrip(":")


class Supervisor:
    """Start with `start()`, end with `stop()` (always call it). Meanwhile every process
    it started is restarted when it dies, and `restart_service()` restarts a service's
    instances one at a time."""

    def __init__(
        self, config: MeshConfig, report: Report, *, policy: RestartPolicy | None = None
    ) -> None:
        self.config = config
        self._report = report
        self._policy = policy or RestartPolicy()
        self._etcd: SupervisedServer | None = None
        self._controlplane: SupervisedServer | None = None
        self._events: SupervisedServer | None = None
        self.instances: list[SupervisedInstance] = []
        self._surges: dict[str, InstanceProcess] = {}  # stand-ins during a rolling restart
        self._registry: EtcdClient | None = None
        self._control: ControlServer | None = None
        self._rolling = asyncio.Lock()
        self._timeout = 60.0
        self._ready = False
        self._saving = False  # from the first whole picture (every instance spawned) on
        self._stopping = False
        self.etcd_endpoint = config.etcd.endpoint
        self.events_endpoint = config.events.endpoint

    async def start(self, timeout: float = 60.0) -> None:
        """Certificates, etcd, the event broker, the control plane (with sidecars), then
        every instance; returns once all serve, and from then
        on restarts what dies. On failure, everything started so far is stopped before
        the error is raised."""
        previous = read_state(self.config.state_dir)
        if (
            previous is not None
            and previous.supervisor_alive()
            and previous.supervisor_pid != os.getpid()
        ):
            raise MeshAlreadyRunning(previous.supervisor_pid)
        self._timeout = timeout
        try:
            self._certificates()
            await self._start_etcd()
            await self._start_events()
            self._registry = EtcdClient(self.etcd_endpoint)
            await self._declare_policy(self._registry)
            if self.config.dataplane == "sidecar":
                await self._start_controlplane()
            await self._spawn_all()
            self._saving = True
            self._save()
            await self._wait_all_ready(self._registry, timeout)
            self._control = ControlServer(socket_path(self.config.state_dir), self._handle)
            await self._control.start()
            self._supervise_all(self._registry)
            self._ready = True
            self._save()
        except BaseException:
            await self.stop()
            raise

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
        self.etcd_endpoint = server.endpoint
        # Kept before it starts: stop() must see it if the start is cut short.
        self._etcd = SupervisedServer(
            server, report=self._report, changed=self._save, policy=self._policy
        )
        started = time.monotonic()
        await self._etcd.start()
        self._report(f"etcd          {server.endpoint} ({time.monotonic() - started:.1f}s)")

    async def _start_events(self) -> None:
        broker = self.config.events.broker
        if self.events_endpoint:
            self._report(f"events        {broker} {self.events_endpoint} (external)")
            return
        if broker != "nats":
            raise ConfigError(
                "events.broker",
                f"{broker}: meshctl up embeds nats only; set events.endpoint to a broker",
            )
        server = NatsServer(
            self.config.state_dir / "nats",
            host=self.config.host,
            port=self.config.events.port,
            log_path=self.config.state_dir / "logs" / "nats.log",
        )
        self.events_endpoint = server.endpoint
        self._events = SupervisedServer(
            server, name="nats", report=self._report, changed=self._save, policy=self._policy
        )
        started = time.monotonic()
        await self._events.start()
        self._report(f"events        nats {server.endpoint} ({time.monotonic() - started:.1f}s)")

    async def _declare_policy(self, etcd: EtcdClient) -> None:
        """The live authz table and weights start as mesh.yaml declares them (etcd may
        hold an earlier run's)."""
        prefix = self.config.etcd.prefix
        try:
            await etcd.put(authz_key(prefix), encode_authz(self.config.authz))
            for name in self.config.services:
                await etcd.delete(traffic_key(prefix, name))
        except RegistryUnavailable as error:
            self._report(f"! cannot reset the live authz table and weights: {error}")

    async def _start_controlplane(self) -> None:
        server = ControlPlaneServer(
            self.config,
            self.etcd_endpoint,
            self.config.state_dir / "logs" / "controlplane.log",
        )
        self._controlplane = SupervisedServer(
            server,
            name="control plane",
            report=self._report,
            changed=self._save,
            policy=self._policy,
        )
        started = time.monotonic()
        await self._controlplane.start()
        self._report(f"control plane {server.endpoint} ({time.monotonic() - started:.1f}s)")

    async def _spawn_all(self) -> None:
        for spec in self.config.services.values():
            for index, (instance_id, version) in enumerate(instance_names(spec)):
                instance = SupervisedInstance(
                    self.config,
                    spec,
                    instance_id,
                    self.etcd_endpoint,
                    port=spec.port + index if spec.port else 0,
                    metrics_port=spec.metrics_port + index if spec.metrics_port else 0,
                    envoy_admin_port=spec.envoy_admin_port + index if spec.envoy_admin_port else 0,
                    version=version,
                    events_endpoint=self.events_endpoint or None,
                    report=self._report,
                    changed=self._save,
                    policy=self._policy,
                )
                self.instances.append(instance)  # before it starts, as for etcd above
                await instance.start()

    async def _wait_all_ready(self, etcd: EtcdClient, timeout: float) -> None:
        """Wait for every instance; the first that fails cancels the waits for the others
        and its error is raised."""
        try:
            async with asyncio.TaskGroup() as waits:
                for instance in self.instances:
                    waits.create_task(self._wait_ready(etcd, instance, timeout))
        except ExceptionGroup as failures:
            raise failures.exceptions[0] from None

    async def _wait_ready(
        self, etcd: EtcdClient, instance: SupervisedInstance, timeout: float
    ) -> None:
        started = time.monotonic()
        endpoint = await instance.wait_ready(etcd, timeout)
        elapsed = time.monotonic() - started
        self._report(f"{instance.instance_id:<13} {endpoint.address} ({elapsed:.1f}s)")

    def _supervise_all(self, etcd: EtcdClient) -> None:
        if self._etcd is not None:
            self._etcd.supervise()
        if self._events is not None:
            self._events.supervise()
        if self._controlplane is not None:
            self._controlplane.supervise()
        for instance in self.instances:
            instance.supervise(etcd)

    def _save(self) -> None:
        """Write state.json as things are now (called on every change)."""
        if self._stopping or not self._saving:
            return
        surges = (
            instance_record(p, state=SERVING if p.endpoint else STARTING)
            for p in self._surges.values()
        )
        etcd, controlplane, events = self._etcd, self._controlplane, self._events
        state = MeshState(
            supervisor_pid=os.getpid(),
            etcd_endpoint=self.etcd_endpoint,
            etcd_pid=etcd.pid if etcd else None,
            ready=self._ready,
            instances=(*(i.record() for i in self.instances), *surges),
            etcd_state=etcd.state if etcd else "",
            etcd_restarts=etcd.restarts if etcd else 0,
            control=str(self._control.path) if self._control else "",
            controlplane=controlplane.server.endpoint if controlplane else "",
            controlplane_pid=controlplane.pid if controlplane else None,
            controlplane_state=controlplane.state if controlplane else "",
            controlplane_restarts=controlplane.restarts if controlplane else 0,
            events_endpoint=self.events_endpoint,
            events_pid=events.pid if events else None,
            events_state=events.state if events else "",
            events_restarts=events.restarts if events else 0,
        )
        write_state(self.config.state_dir, state)

    # -- rolling restart ------------------------------------------------------------

    async def _handle(self, request: ControlRequest, progress: Progress) -> ControlEvent:
        assert request.command == "restart"  # the only command ControlRequest accepts
        return await self.restart_service(request.service, progress)

    async def restart_service(self, service: str, progress: Progress) -> ControlEvent:
        """Restart `service`'s instances one at a time, each once the previous one is
        SERVING again, with another instance SERVING throughout (a stand-in, if the
        service has no other): the final event says how it went."""
        if service not in self.config.services:
            known = ", ".join(sorted(self.config.services))
            return ControlEvent("failed", f"no service {service!r} (known: {known})", code=2)
        if self._rolling.locked():
            return ControlEvent("failed", "a rolling restart is already running", code=1)
        async with self._rolling:
            members = [i for i in self.instances if i.spec.name == service]
            for member in members:
                try:
                    await self._restart_one(member, members, progress)
                except _StepFailed as failure:
                    return ControlEvent("failed", str(failure), code=1, log=failure.log)
        return ControlEvent(
            "done", f"restarted {service}: {len(members)} instance(s), one at a time"
        )

    async def _restart_one(
        self, member: SupervisedInstance, members: list[SupervisedInstance], progress: Progress
    ) -> None:
        assert self._registry is not None
        # Another version is no stand-in: its weight may be 0 (or the split is the point).
        others = [
            other
            for other in members
            if other is not member and other.process.version == member.process.version
        ]
        surge = None
        if not await self._any_serving(others):
            surge = await self._start_surge(member, progress)
        try:
            await member.restart(self._registry, self._timeout, progress)
        except (MeshError, OSError) as error:
            raise _StepFailed(
                f"{member.instance_id} is not SERVING again: {_reason(error)}", member.log_tail()
            ) from error
        finally:
            if surge is not None:
                code = await self._stop_surge(surge)
                await progress(
                    f"{member.instance_id}: stand-in {surge.instance_id} stopped (exit code {code})"
                )

    async def _any_serving(self, instances: list[SupervisedInstance]) -> bool:
        for instance in instances:
            endpoint = instance.process.endpoint
            if instance.state != SERVING or endpoint is None:
                continue
            if await check_health(self.config, endpoint.address) == "SERVING":
                return True
        return False

    async def _start_surge(self, member: SupervisedInstance, progress: Progress) -> InstanceProcess:
        """A temporary extra instance of `member`'s service, on free ports, SERVING."""
        assert self._registry is not None
        surge = InstanceProcess(
            self.config,
            member.spec,
            f"{member.instance_id}-surge",
            self.etcd_endpoint,
            version=member.process.version,
            events_endpoint=self.events_endpoint or None,
        )
        self._surges[surge.instance_id] = surge
        try:
            await surge.start()
            self._save()
            endpoint = await surge.wait_ready(self._registry, self._timeout)
        except (MeshError, OSError) as error:
            await self._stop_surge(surge)
            raise _StepFailed(
                f"stand-in {surge.instance_id} failed: {_reason(error)}", surge.log_tail()
            ) from error
        self._save()
        await progress(
            f"{member.instance_id}: stand-in {surge.instance_id} SERVING at "
            f"{endpoint.address} (pid {surge.pid})"
        )
        return surge

    async def _stop_surge(self, surge: InstanceProcess) -> int | None:
        code = await surge.stop()
        self._surges.pop(surge.instance_id, None)
        self._save()
        return code

    # -- stop -------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every instance (gracefully, in parallel), then the control plane, the
        event broker, and etcd last; forget the state.
        Nothing is restarted from here on, and a rolling restart in progress ends."""
        if self._control is not None:
            await self._control.aclose()  # cancels a rolling restart, which stops its stand-in
        self._stopping = True
        processes: list[SupervisedInstance | InstanceProcess] = [
            *self.instances,
            *self._surges.values(),
        ]
        codes = await asyncio.gather(*(p.stop() for p in processes))
        for process, code in zip(processes, codes, strict=True):
            if code not in (0, None):
                self._report(f"! {process.instance_id} stopped with code {code}")
        self.instances.clear()
        self._surges.clear()
        if self._controlplane is not None:
            await self._controlplane.stop()
            self._controlplane = None
        if self._events is not None:
            await self._events.stop()
            self._events = None
        if self._etcd is not None:
            await self._etcd.stop()
            self._etcd = None
        if self._registry is not None:
            await self._registry.aclose()
            self._registry = None
        state = read_state(self.config.state_dir)
        if state is not None and state.supervisor_pid == os.getpid():
            clear_state(self.config.state_dir)
