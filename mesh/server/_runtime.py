"""Run one service instance: mTLS gRPC server, health, reflection, metrics, tracing,
registration in etcd, and a graceful stop.

Start order: servicers, health (NOT_SERVING), reflection, listen, metrics, the
sidecar (with `dataplane: sidecar`), register in etcd, then SERVING. Stop order on
SIGTERM/SIGINT: every health status NOT_SERVING, revoke the lease (the instance leaves
etcd and clients stop picking it), keep serving for `drain_delay` while that news
spreads, then stop accepting calls and give in-flight ones `grace_period` to finish,
then stop the sidecar, close clients and exporters. A signal while it is still
registering (etcd unreachable, say) ends it at once, exit code 0.

With `dataplane: sidecar` the app listens only on its Unix socket, and what it
registers is its sidecar's inbound mTLS address (see mesh.server._sidecar); the
caller's identity then comes from the sidecar's x-forwarded-client-cert. Both data
planes follow the live authz table in etcd (`meshctl apply`), on open connections too,
and the service's live faults (`meshctl fault`) over mesh.yaml's, from the next call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
)
from prometheus_client import CollectorRegistry

from mesh.authz import AuthzTable
from mesh.client import MeshClient, data_plane
from mesh.config import (
    MeshConfig,
    NoSettings,
    ServiceSpec,
    load_config,
    settings_schema,
    validate_settings,
)
from mesh.errors import MeshError
from mesh.events import EventBus, event_bus
from mesh.identity import IdentityFiles, server_credentials
from mesh.registry import (
    Endpoint,
    EtcdClient,
    EtcdDiscovery,
    LiveFaults,
    LivePolicy,
    Registration,
)
from mesh.server._caller import CallerOf
from mesh.server._faults import FaultInjector
from mesh.server._interceptor import MeshInterceptor, Registrar, forwarded_sans, peer_sans
from mesh.server._sidecar import Sidecar, SidecarSockets
from mesh.state import etcd_endpoint
from mesh.tasks import cancel_and_wait
from mesh.telemetry import (
    ClientMetrics,
    HeadSampler,
    MetricsServer,
    ServerMetrics,
    configure_logging,
    tracer_provider,
)

__all__ = ["InstanceSettings", "Runtime", "run_service", "serve"]

log = logging.getLogger("mesh.server")

ServicerAdder = Callable[[Any, Any], None]  # add_XServicer_to_server(servicer, server)
Setup = Callable[["Runtime"], Awaitable[None]]
Cleanup = Callable[[], Awaitable[None] | None]


@dataclass(frozen=True)
class InstanceSettings:
    """Everything one instance needs, resolved at its entrypoint."""

    config: MeshConfig
    service: ServiceSpec
    instance_id: str
    port: int
    metrics_port: int
    etcd_endpoint: str
    version: str
    service_settings: Any
    """The service's own settings (`services.<name>.settings`), an instance of the
    model its `__main__` gave `run_service`."""
    otlp_endpoint: str | None = None
    events_endpoint: str | None = None
    """The event broker (`--events`); None: mesh.yaml's, else the one `meshctl up` runs."""
    envoy_admin_port: int = 0
    """Its sidecar's admin port (0: any free port)."""

    @property
    def trace_file(self) -> Path:
        return self.config.state_dir / "traces" / f"{self.instance_id}.jsonl"


class Runtime:
    """What a service's setup function gets: where to add servicers, the mesh client for
    downstream calls, and its own data folder (shared by the service's instances)."""

    def __init__(
        self,
        settings: InstanceSettings,
        registrar: Registrar,
        client: MeshClient,
        tracer: trace.Tracer,
        caller_of: CallerOf,
        metrics: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.caller_of = caller_of
        """`caller_of(context)`: who makes a call (identity, and the edge's end user)."""
        self._registrar = registrar
        self.client = client
        self.tracer = tracer  # for the service's own spans, children of the call's span
        self.service_names: list[str] = []
        self._services: list[ServiceDescriptor] = []
        self.metadata: dict[str, str] = {}
        """Registered with the instance (say, the URL of a listener of the service's
        own); `meshctl status` shows some keys (`url`)."""
        self.metrics = metrics
        """The instance's Prometheus registry, served on /metrics: add the service's own
        metrics here."""
        self._cleanups: list[Cleanup] = []
        self._bus: EventBus | None = None
        self._bus_lock = asyncio.Lock()

    @property
    def data_dir(self) -> Path:
        path = self.settings.config.state_dir / "data" / self.settings.service.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def version(self) -> str:
        return self.settings.version

    def add_service(
        self, descriptor: ServiceDescriptor, servicer: object, adder: ServicerAdder
    ) -> None:
        """Serve `servicer` (health status and reflection follow `descriptor`); its
        handlers are guarded (authz, metrics, deadlines, errors, tracing) as it is added."""
        adder(servicer, self._registrar)
        self.service_names.append(descriptor.full_name)
        self._services.append(descriptor)

    def own_methods(self) -> list[str]:
        """Every method of the services added so far, as "pkg.Service/Method"."""
        return [f"{s.full_name}/{m.name}" for s in self._services for m in s.methods]

    async def event_bus(self) -> EventBus:
        """The mesh's event bus, connected on first use and closed with the instance.

        Raises:
            BrokerUnavailable: no broker is known, or it does not answer.
        """
        async with self._bus_lock:  # one connection, however many ask at once
            if self._bus is None:
                config = self.settings.config
                self._bus = await event_bus(config, endpoint=self.settings.events_endpoint)
                self.on_close(self._bus.aclose)
            return self._bus

    def on_close(self, cleanup: Cleanup) -> None:
        """Run `cleanup` after the server has stopped, in reverse order of registration."""
        self._cleanups.append(cleanup)

    async def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            result = cleanup()
            if result is not None:
                await result


async def serve(settings: InstanceSettings, setup: Setup, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then stop gracefully. Raises MeshError if it cannot start."""
    config, spec = settings.config, settings.service
    provider = tracer_provider(
        service=spec.name,
        instance_id=settings.instance_id,
        otlp_endpoint=settings.otlp_endpoint,
        trace_file=settings.trace_file,
    )
    registry = CollectorRegistry()
    identity = IdentityFiles(config.certs_dir, spec.name)
    etcd = EtcdClient(settings.etcd_endpoint)
    sidecar_mode = config.dataplane == "sidecar"
    sockets = SidecarSockets.of(config, settings.instance_id) if sidecar_mode else None
    live = LivePolicy(etcd, config.etcd.prefix, config.authz)
    client = MeshClient(
        data_plane(
            config,
            identity,
            EtcdDiscovery(etcd, config.etcd.prefix),
            interceptors=aio_client_interceptors(tracer_provider=provider),  # type: ignore[no-untyped-call]
            metrics=ClientMetrics(registry),
            outbound_socket=sockets.outbound if sockets else None,
            # Not `live.weights.get`: LivePolicy replaces the dict on every change.
            weights=lambda service: live.weights.get(service),
        )
    )
    authz = AuthzTable(config.authz, config.trust_domain, config.namespace)
    live.listen(lambda: authz.replace(live.authz))
    faults = FaultInjector(spec.name, spec.faults, registry)
    live_faults = LiveFaults(etcd, config.etcd.prefix, spec.name)
    live_faults.listen(lambda: faults.set_live(live_faults.faults))
    interceptor = MeshInterceptor(
        authz,
        ServerMetrics(registry),
        tracing=aio_server_interceptor(tracer_provider=provider),  # type: ignore[no-untyped-call]
        sampler=HeadSampler(config.telemetry.trace_sample_ratio),
        caller_sans=forwarded_sans if sidecar_mode else peer_sans,
        faults=faults,
    )
    server = grpc.aio.server(
        # Without this a second instance could bind the same fixed port and split its traffic.
        options=[("grpc.so_reuseport", 0)],
    )
    registrar = interceptor.registrar(server)  # handlers are wrapped as they are added
    runtime = Runtime(
        settings,
        registrar,
        client,
        provider.get_tracer(f"services.{spec.name}"),
        CallerOf(interceptor.caller_sans),
        registry,
    )
    health_servicer = health.aio.HealthServicer()
    metrics: MetricsServer | None = None
    registration: Registration | None = None
    sidecar: Sidecar | None = None
    live.start()
    try:
        await setup(runtime)
        faults.bind(runtime.own_methods())  # not health's nor reflection's: never faulted
        live_faults.start()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)  # type: ignore[arg-type]
        names = [*runtime.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
            reflection.aio.ReflectionServicer([*names, reflection.SERVICE_NAME]), registrar
        )
        unserved = registrar.unserved()
        if unserved:
            raise MeshError(f"added only as generic handlers, so never served: {unserved}")
        if sockets is not None:
            _listen_on_socket(server, sockets.app)
        else:
            address = f"{config.host}:{settings.port}"
            try:
                port = server.add_secure_port(address, server_credentials(identity))
            except RuntimeError as error:
                raise MeshError(f"cannot listen on {address}: is the port taken?") from error
        try:
            metrics = MetricsServer(registry, config.host, settings.metrics_port)
        except OSError as error:
            raise MeshError(
                f"cannot serve metrics on {config.host}:{settings.metrics_port}: {error.strerror}"
            ) from error
        for name in ["", *runtime.service_names]:  # grpc's servicer starts "" as SERVING
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        extra = {"dataplane": config.dataplane}
        if sockets is not None:
            sidecar = Sidecar(
                config,
                spec,
                instance_id=settings.instance_id,
                version=settings.version,
                inbound_port=settings.port,
                admin_port=settings.envoy_admin_port,
                sockets=sockets,
                etcd=etcd,
            )
            await sidecar.start()
            address = sidecar.inbound_address
            extra["envoy_admin"] = sidecar.admin_address
        else:
            address = f"{config.host}:{port}"
        endpoint = Endpoint(
            service=spec.name,
            instance_id=settings.instance_id,
            address=address,
            version=settings.version,
            metadata={
                **runtime.metadata,
                "metrics": metrics.address,
                "pid": str(os.getpid()),
                **extra,
            },
        )
        registration = Registration(etcd, config.etcd.prefix, endpoint, config.etcd.lease_ttl)
        if not await _unless_stopped(registration.start(), stop):
            log.info("stopped while registering")  # the finally revokes any lease it got
            return
        for name in ["", *runtime.service_names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "address": endpoint.address,
                "metrics": metrics.address,
                "version": settings.version,
                "services": runtime.service_names,
                "etcd": etcd.endpoint,
            },
        )
        await stop.wait()
        log.info(
            "stopping: draining for %.1fs, then %.1fs grace",
            config.server.drain_delay,
            config.server.grace_period,
        )
        await health_servicer.enter_graceful_shutdown()
        await registration.aclose()
        registration = None
        await asyncio.sleep(config.server.drain_delay)
        log.info("drained: calls in flight have %.1fs to finish", config.server.grace_period)
        await server.stop(config.server.grace_period)
    finally:
        await server.stop(0)
        if registration is not None:
            await registration.aclose()
        if sidecar is not None:
            await sidecar.aclose()  # after the app: its last calls went out through it
        await runtime.close()
        await client.aclose()
        await live_faults.aclose()
        await live.aclose()
        await etcd.aclose()
        if metrics is not None:
            metrics.close()
        provider.shutdown()
    log.info("stopped")


def _listen_on_socket(server: grpc.aio.Server, path: str) -> None:
    """Plaintext on a Unix socket only this user may open: the sidecar's way in."""
    try:
        server.add_insecure_port(f"unix:{path}")
    except RuntimeError as error:
        raise MeshError(f"cannot listen on unix:{path}") from error
    os.chmod(path, 0o600)  # its folder is 0700 already, so no one got in meanwhile


async def _unless_stopped(step: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `step` unless `stop` is set first, which cancels it. True if it finished;
    raises its error if it failed."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            await cancel_and_wait(task)
    if task.cancelled() or (stop.is_set() and task.exception() is not None):
        return False  # a stop wins over a failure that raced it
    task.result()
    return True


def _parse(service: str, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{service}", description=f"Run one {service} instance."
    )
    parser.add_argument(
        "--config", type=Path, default=Path("mesh.yaml"), help="mesh.yaml (default: ./mesh.yaml)"
    )
    parser.add_argument(
        "--instance-id", help="unique id in the registry (default: <service>-<random>)"
    )
    parser.add_argument(
        "--port", type=int, help="gRPC port (default: the service's port in mesh.yaml)"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus port (default: from mesh.yaml)"
    )
    parser.add_argument(
        "--envoy-admin-port",
        type=int,
        help="the sidecar's Envoy admin port, with dataplane: sidecar (default: from mesh.yaml)",
    )
    parser.add_argument(
        "--etcd", help="etcd host:port (default: mesh.yaml, else the one meshctl started)"
    )
    parser.add_argument(
        "--version", dest="version", help="version to register (default: from mesh.yaml)"
    )
    parser.add_argument(
        "--events",
        help="the event broker's host:port (default: mesh.yaml, else the one meshctl started)",
    )
    parser.add_argument(
        "--settings-schema",
        action="store_true",
        help="print the JSON Schema of the service's settings in mesh.yaml and exit",
    )
    return parser.parse_args(argv)


def _etcd(config: MeshConfig, flag: str | None) -> str:
    endpoint = flag or etcd_endpoint(config)
    if endpoint is None:
        raise MeshError(
            "no etcd: pass --etcd, set etcd.endpoint in mesh.yaml, or start one with `meshctl up`"
        )
    return endpoint


def run_service(
    service: str,
    setup: Setup,
    argv: Sequence[str] | None = None,
    *,
    settings: type[Any] = NoSettings,
) -> int:
    """The whole `__main__` of a service: parse flags, read mesh.yaml, check the
    service's own settings against `settings` (a pydantic model or dataclass; the
    default takes none), serve until a signal. Returns the process exit code: 0 after a
    graceful stop, 2 for a bad configuration."""
    args = _parse(service, sys.argv[1:] if argv is None else argv)
    if args.settings_schema:
        print(json.dumps(settings_schema(settings), indent=2))
        return 0
    instance_id = args.instance_id or f"{service}-{uuid.uuid4().hex[:8]}"
    configure_logging("info", service=service, instance=instance_id)
    try:
        config = load_config(args.config)
        spec = config.service(service)
        service_settings = validate_settings(spec, settings)
        instance = InstanceSettings(
            config=config,
            service=spec,
            instance_id=instance_id,
            port=spec.port if args.port is None else args.port,
            metrics_port=spec.metrics_port if args.metrics_port is None else args.metrics_port,
            envoy_admin_port=(
                spec.envoy_admin_port if args.envoy_admin_port is None else args.envoy_admin_port
            ),
            etcd_endpoint=_etcd(config, args.etcd),
            version=args.version or spec.version,
            service_settings=service_settings,
            otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            events_endpoint=args.events,
        )
    except MeshError as error:
        log.error("cannot start: %s", error)
        return 2
    logging.getLogger().setLevel(config.telemetry.log_level.upper())  # validated: a level
    log.info(
        "config",
        extra={
            "config": str(config.path),
            "port": instance.port,
            "metrics_port": instance.metrics_port,
            "etcd": instance.etcd_endpoint,
        },
    )
    return _run(instance, setup)


def _run(settings: InstanceSettings, setup: Setup) -> int:
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, setup, stop)

    try:
        uvloop.run(main())
    except MeshError as error:
        log.error("cannot start: %s", error)
        return 1
    except Exception:
        log.exception("crashed")
        return 1
    return 0
