"""A RabbitMQ broker for tests: Debian's rabbitmq-server run as a child process (never
the system service) on free loopback ports, with its own epmd, node name, database,
config and logs in a folder of the test's, stopped (terminate, wait, kill) however the
test ends.

RabbitMQ is an Erlang node, so besides its AMQP port it needs a distribution port and
an epmd (the Erlang port mapper) to register with. The harness runs its own epmd on a
free port as a child too, and tells the node not to start one (`-start_epmd false`):
an epmd that the node started itself would outlive every test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from mesh.errors import MeshError
from mesh.process import free_port, log_tail, owned_command, stop_process

__all__ = ["RABBITMQ_SERVER", "RabbitMqServer", "rabbitmq_server", "server_log"]

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
"""The Debian package's own start script. /usr/sbin/rabbitmq-server is a wrapper that
switches to the `rabbitmq` user and its system folders, so the harness runs this one."""
EPMD = "epmd"
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1


class RabbitMqServer:
    """Runs rabbitmq-server (and an epmd for it) with everything under `root`.

    Ports and the node name are chosen at construction and kept for restarts, so
    clients that reconnect to `endpoint` find the restarted broker, with the same
    database (its streams and queues).
    """

    def __init__(self, root: Path, *, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host
        self.port = free_port(host)
        self.dist_port = free_port(host)
        self.epmd_port = free_port(host)
        self.node = f"rabbit-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = root / "log" / "rabbit.log"
        self.output_path = root / "rabbitmq.out"
        self.startup_seconds: list[float] = []
        """How long each start took, until the broker answered AMQP."""
        self._broker: asyncio.subprocess.Process | None = None
        self._epmd: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        """host:port of its AMQP listener."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._broker.pid if self._broker else None

    async def start(self, timeout: float = 30.0) -> None:
        """Start epmd and the broker; returns once the broker answers AMQP. Raises
        MeshError (with the log's tail) if it exits first or is not up in time."""
        started = time.monotonic()
        self._write_config()
        await self._start_epmd(timeout)
        with self.output_path.open("ab") as output:
            self._broker = await asyncio.create_subprocess_exec(
                *owned_command([str(RABBITMQ_SERVER)]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=self._environment(),
                cwd=self.root,
                start_new_session=True,  # its own process group: see stop()
            )
        try:
            await self._wait_ready(started + timeout)
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds.append(time.monotonic() - started)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the start script passes it on to the Erlang VM, which shuts down
        cleanly), SIGKILL to the whole process group after `timeout` s; then epmd."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await _terminate_group(broker, timeout)
        if self._epmd is not None:
            epmd, self._epmd = self._epmd, None
            await stop_process(epmd, timeout)

    def _write_config(self) -> None:
        for folder in (self.root, self.log_path.parent, self.root / "mnesia"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host}:{self.port}\n"
            # A test machine's tmp may be small: do not block publishers over it.
            "disk_free_limit.absolute = 1MB\n"
        )
        (self.root / "enabled_plugins").write_text("[].\n")  # none: AMQP 0-9-1 is core
        (self.root / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's

    def _environment(self) -> dict[str, str]:
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("RABBITMQ_", "ERL_"))
        }
        root = str(self.root)
        return {
            **inherited,
            "HOME": root,  # where Erlang keeps the node's cookie
            "ERL_EPMD_ADDRESS": self.host,
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": self.host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": f"{root}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{root}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{root}/advanced.config",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{root}/enabled_plugins",
            "RABBITMQ_MNESIA_BASE": f"{root}/mnesia",
            "RABBITMQ_LOG_BASE": str(self.log_path.parent),
            "RABBITMQ_LOGS": str(self.log_path),
            "RABBITMQ_PID_FILE": f"{root}/rabbitmq.pid",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
        }

    async def _start_epmd(self, timeout: float) -> None:
        with self.output_path.open("ab") as output:
            self._epmd = await asyncio.create_subprocess_exec(
                *owned_command([EPMD, "-port", str(self.epmd_port), "-address", self.host]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        until = time.monotonic() + timeout
        while not await asyncio.to_thread(self._listens, self.epmd_port):
            if self._epmd.returncode is not None or time.monotonic() > until:
                await self.stop()
                raise MeshError(f"epmd did not listen on {self.host}:{self.epmd_port}")
            await asyncio.sleep(0.02)

    async def _wait_ready(self, until: float) -> None:
        assert self._broker is not None
        while time.monotonic() < until:
            if self._broker.returncode is not None:
                raise MeshError(
                    f"rabbitmq-server exited with {self._broker.returncode} on "
                    f"{self.endpoint}:\n{server_log(self)}"
                )
            if await asyncio.to_thread(self._answers_amqp):
                return
            await asyncio.sleep(0.1)
        raise MeshError(f"rabbitmq-server on {self.endpoint} not up in time:\n{server_log(self)}")

    def _listens(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def _answers_amqp(self) -> bool:
        """Whether the broker answers a protocol header with Connection.Start: its
        listener opens last in its boot, once queues and the default vhost are up."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as probe:
                probe.settimeout(2.0)
                probe.sendall(_AMQP_HEADER)
                return probe.recv(1) == bytes([_FRAME_METHOD])
        except OSError:
            return False

    async def __aenter__(self) -> RabbitMqServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def _terminate_group(process: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM to `process`; if it has not exited after `timeout` s, SIGKILL to its
    process group, which holds the Erlang VM the script started."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            await process.wait()
    except TimeoutError:
        # Still running, so not reaped: its pid is still its group's id, and ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


@contextlib.asynccontextmanager
async def rabbitmq_server(root: Path) -> AsyncIterator[RabbitMqServer]:
    """A started RabbitMqServer with everything in `root`; `.endpoint` is where
    clients connect. `stop()` and `start()` restart it on the same ports and database
    (an outage); it is stopped at the end."""
    server = RabbitMqServer(root)
    try:
        await server.start(timeout=60)
        yield server
    finally:
        await server.stop()


def server_log(server: RabbitMqServer) -> str:
    """The end of `server`'s log and console output, for a failure message."""
    return f"{log_tail(server.log_path, 30)}\n{log_tail(server.output_path, 10)}"
