"""Child processes: free ports, binaries from the venv, and a stop that always ends them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from mesh.errors import MeshError

__all__ = [
    "ServerProcess",
    "find_binary",
    "free_port",
    "log_tail",
    "owned_command",
    "relative_path",
    "stop_process",
]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def find_binary(name: str) -> str:
    """`name` from this interpreter's venv (where the etcd and grpcurl wheels put
    their binaries) or else from PATH."""
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which(name, path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if found is None:
        raise MeshError(
            f"{name} not found in {venv_bin} or on PATH; run `make up` or `pip install -e .`"
        )
    return found


def owned_command(command: list[str]) -> list[str]:
    """`command`, made to receive SIGTERM if the process that starts it dies (Linux's
    parent-death signal, set by util-linux's setpriv before it execs the command), so
    a supervisor or test run that is killed leaves no orphans behind. Elsewhere, the
    command as it is."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def relative_path(path: Path) -> str:
    """`path` as a person in the current folder would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def stop_process(process: asyncio.subprocess.Process, timeout: float) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode


class ServerProcess:
    """What every long-running child server shares (the embedded etcd, the control
    plane): its pid, waiting for it, stopping it, and killing it as a crash would.
    Subclasses start `_process`."""

    _process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def wait(self) -> int | None:
        """Until the process exits; its exit code, or None if none is running."""
        return await self._process.wait() if self._process is not None else None

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s."""
        if self._process is not None:
            await stop_process(self._process, timeout)
            self._process = None

    async def kill(self) -> None:
        """Stop without a chance to clean up, as a crash would."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None
