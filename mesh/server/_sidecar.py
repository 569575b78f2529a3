"""An instance's own Envoy, as a pod's sidecar: started before the instance registers,
restarted with backoff whenever it dies, stopped after the app has drained.

The app serves only on a Unix socket (0600, in a 0700 folder under the state dir) that
the sidecar forwards to; the app's mesh client calls out through a second socket the
sidecar listens on. Both are the instance's own: no other user can dial the app, nor
call the mesh as its identity. The inbound mTLS listener, on the instance's port, is
what the instance registers, so grpcurl, proxyless clients and other sidecars all
reach the instance through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.backoff import Backoff
from mesh.config import CONTROLPLANE_IDENTITY, MeshConfig, ServiceSpec
from mesh.envoy import SidecarNode, bootstrap, runtime_defaults
from mesh.errors import MeshError, RegistryUnavailable
from mesh.identity import IdentityFiles, SpiffeId
from mesh.process import free_port
from mesh.registry import EtcdClient, controlplane_key
from mesh.server._envoy import EnvoyProcess
from mesh.tasks import cancel_and_wait, start_background

__all__ = ["Sidecar", "SidecarSockets", "controlplane_address"]

log = logging.getLogger("mesh.sidecar")

_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with its NUL
_ENVOY_LEVELS = {"debug": "debug", "info": "warning", "error": "error", "critical": "critical"}
"""Envoy's level for the mesh's: at info, Envoy lists its ~100 extensions per start."""
_STABLE_AFTER = 10.0  # seconds up after which a crash starts the backoff again


@dataclass(frozen=True)
class SidecarSockets:
    """The two Unix sockets between an app and its sidecar."""

    app: str
    outbound: str

    @classmethod
    def of(cls, config: MeshConfig, instance_id: str) -> SidecarSockets:
        """The instance's sockets under `<state_dir>/run/` (created 0700); raises
        MeshError if the paths are too long for a Unix socket."""
        folder = config.state_dir / "run"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        sockets = cls(
            app=str(folder / f"{instance_id}.app"), outbound=str(folder / f"{instance_id}.out")
        )
        for path in (sockets.app, sockets.outbound):
            if len(path.encode()) > _MAX_SOCKET_PATH:
                raise MeshError(
                    f"socket path {path} is longer than {_MAX_SOCKET_PATH} bytes: "
                    "use a shorter mesh.state_dir"
                )
            Path(path).unlink(missing_ok=True)  # a crashed predecessor's
        return sockets


async def controlplane_address(etcd: EtcdClient, prefix: str, timeout: float) -> tuple[str, int]:
    """The control plane's host and port, as it registered them in etcd; waits up to
    `timeout` s for it to appear."""
    key = controlplane_key(prefix)
    until = time.monotonic() + timeout
    while True:
        try:
            raw = await etcd.get(key)
        except RegistryUnavailable:
            raw = None
        if raw is not None:
            host, _, port = json.loads(raw)["address"].rpartition(":")
            return host, int(port)
        if time.monotonic() >= until:
            raise MeshError(
                f"no control plane registered at {key} within {timeout:.0f}s: "
                "the sidecar data plane needs `meshctl up` (or `python -m mesh.xds`)"
            )
        await asyncio.sleep(0.1)


class Sidecar:
    """The instance's Envoy. `start()` returns once it serves the config the control
    plane sent; from then on it is restarted whenever it dies, until `aclose()`."""

    def __init__(
        self,
        config: MeshConfig,
        spec: ServiceSpec,
        *,
        instance_id: str,
        version: str,
        inbound_port: int,
        admin_port: int = 0,
        sockets: SidecarSockets,
        etcd: EtcdClient,
    ) -> None:
        self._config = config
        self._spec = spec
        self._instance_id = instance_id
        identity = IdentityFiles(config.certs_dir, spec.name)
        self.node = SidecarNode(
            node_id=instance_id,
            service=spec.name,
            version=version,
            inbound_host=config.host,
            inbound_port=inbound_port or free_port(config.host),
            app_socket=sockets.app,
            outbound_socket=sockets.outbound,
            cert_chain=str(identity.cert.resolve()),
            private_key=str(identity.key.resolve()),
            ca=str(identity.ca.resolve()),
        )
        self._etcd = etcd
        self._admin_port = admin_port or free_port(config.host)  # kept for restarts
        self._process: EnvoyProcess | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.2, maximum=10.0)
        self.restarts = 0

    @property
    def inbound_address(self) -> str:
        return f"{self.node.inbound_host}:{self.node.inbound_port}"

    @property
    def admin_address(self) -> str:
        return f"{self._config.host}:{self._admin_port}"

    async def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Start it (again, with backoff, if it exits while starting: up to `attempts`
        times) and keep it running from then on."""
        for attempt in range(attempts):
            try:
                await self._start_once(timeout)
                break
            except MeshError as error:
                if (
                    attempt + 1 == attempts
                    or self._process is None
                    or self._process.returncode is None
                ):
                    raise
                log.warning("sidecar exited while starting, starting it again: %s", error)
                await asyncio.sleep(self._backoff.delay(attempt))
        self._keeper = start_background(self._keep_running(), f"sidecar {self._instance_id}")

    async def _start_once(self, timeout: float) -> None:
        config = self._config
        host, port = await controlplane_address(self._etcd, config.etcd.prefix, timeout)
        document = bootstrap(
            self.node,
            xds_host=host,
            xds_port=port,
            controlplane_spiffe=SpiffeId(
                config.trust_domain, config.namespace, CONTROLPLANE_IDENTITY
            ).uri,
            admin_host=config.host,
            admin_port=self._admin_port,
            runtime=runtime_defaults(self._spec),
        )
        process = EnvoyProcess(
            document,
            workdir=config.state_dir / "run",
            log_path=config.state_dir / "logs" / f"{self._instance_id}.envoy.log",
            name=f"{self._instance_id}.envoy",
            log_level=_ENVOY_LEVELS.get(config.telemetry.log_level, "warning"),
            log_fields={"service": self._spec.name, "instance": self._instance_id},
        )
        self._process = process
        await process.start()
        await process.wait_ready(timeout)
        log.info(
            "sidecar ready",
            extra={
                "inbound": self.inbound_address,
                "admin": self.admin_address,
                "pid": process.pid,
            },
        )

    async def _keep_running(self) -> None:
        crashes = 0
        while True:
            assert self._process is not None
            started = time.monotonic()
            code = await self._process.wait()
            if time.monotonic() - started >= _STABLE_AFTER:
                crashes = 0
            delay = self._backoff.delay(crashes)
            crashes += 1
            log.warning("sidecar exited with code %s; restarting in %.1fs", code, delay)
            await asyncio.sleep(delay)
            try:
                await self._start_once(timeout=30.0)
                self.restarts += 1
                log.info("sidecar restarted", extra={"restarts": self.restarts})
            except MeshError as error:
                log.error("sidecar did not come back: %s", error)

    async def aclose(self) -> None:
        if self._keeper is not None:
            await cancel_and_wait(self._keeper)
            self._keeper = None
        if self._process is not None:
            await self._process.stop()
            self._process = None
