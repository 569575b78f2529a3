"""An Envoy process: the instance's sidecar, run from a bootstrap and driven through
its admin interface."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.errors import MeshError
from mesh.process import find_binary, log_tail, owned_command, stop_process

__all__ = ["EnvoyProcess"]

# Admin calls go to loopback only: never through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_READY_POLL = 0.02  # Envoy is ready ~50 ms after start once its xDS answers at once


class EnvoyProcess:
    """Runs `envoy` on `bootstrap` (the admin address Envoy binds, port 0 included, is
    read back from `<workdir>/<name>.admin`).

    Envoy's log goes to `log_path`, one file per sidecar, as JSON lines like the
    instances' own (time, level, logger "envoy.<component>", message, plus
    `log_fields`), at `log_level` (Envoy's names: trace ... critical). The process
    receives SIGTERM if the one that started it dies.
    """

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        workdir: Path,
        log_path: Path,
        name: str,
        log_level: str = "warning",
        log_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.log_path = log_path
        self.name = name
        self._log_level = log_level
        self._log_fields = dict(log_fields or {})
        self._process: asyncio.subprocess.Process | None = None
        self._admin_address: str | None = None

    @property
    def bootstrap_path(self) -> Path:
        return self.workdir / f"{self.name}.bootstrap.json"

    @property
    def admin_address_path(self) -> Path:
        return self.workdir / f"{self.name}.admin"

    @property
    def admin_address(self) -> str | None:
        """Admin "host:port", once `wait_ready()` has read it."""
        return self._admin_address

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        """Write the bootstrap and start Envoy; `wait_ready()` then waits until it serves."""
        if self._process is not None and self._process.returncode is None:
            raise MeshError(f"envoy {self.name} is running already (pid {self._process.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.bootstrap_path.write_text(json.dumps(self.bootstrap, indent=2))
        # An address left by an earlier run would point at a port nobody serves.
        self.admin_address_path.unlink(missing_ok=True)
        self._admin_address = None
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *owned_command([find_binary("envoy")]),
                *self._arguments(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def _arguments(self) -> list[str]:
        return [
            "--config-path",
            str(self.bootstrap_path),
            # Several Envoys on one host: without hot restart none needs shared memory
            # or a base id (dynamic base ids, picked by Envoys starting together, were
            # seen to crash one now and then). A sidecar that dies is started anew.
            "--disable-hot-restart",
            "--concurrency",
            "1",  # one worker suits a sidecar on a small host
            "--admin-address-path",
            str(self.admin_address_path),
            "--log-level",
            self._log_level,
            "--log-format",
            _log_format(self._log_fields),
        ]

    async def wait_ready(self, timeout: float) -> str:
        """Until admin `/ready` answers 200 (Envoy is LIVE: its initial xDS fetch is
        done); returns the admin "host:port". Raises MeshError with the log's tail if
        Envoy exits first, or stops it and raises if it is not ready in `timeout` s."""
        process = self._running()
        until = time.monotonic() + timeout
        state = "no admin address yet"
        while time.monotonic() < until:
            if process.returncode is not None:
                raise self._failure(f"exited with {process.returncode}")
            # Read again each time: a first read may have caught Envoy mid-write.
            self._admin_address = self._read_admin_address()
            if self._admin_address is not None:
                status, body = await self.admin("/ready", timeout=0.5)
                if status == 200:
                    return self._admin_address
                state = f"/ready answers {status} {body.strip()[:40]}"
            await asyncio.sleep(_READY_POLL)
        await self.stop()
        raise self._failure(f"not ready within {timeout:g}s ({state})")

    def _read_admin_address(self) -> str | None:
        try:
            address = self.admin_address_path.read_text().strip()
        except FileNotFoundError:
            return None
        return address or None

    def _failure(self, problem: str) -> MeshError:
        return MeshError(f"envoy {self.name} {problem}:\n{log_tail(self.log_path)}")

    async def admin(
        self, path: str, *, method: str = "GET", timeout: float = 5.0
    ) -> tuple[int, str]:
        """One admin request: its HTTP status and body. A status of 0 means the admin
        interface could not be reached."""
        if self._admin_address is None:
            raise MeshError(f"envoy {self.name} has no admin address yet (wait_ready first)")
        url = f"http://{self._admin_address}{path}"
        return await asyncio.to_thread(_http, url, method, timeout)

    async def wait(self) -> int:
        """Until Envoy exits; its exit code."""
        return await self._running().wait()

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; the exit code, None if never started."""
        if self._process is None:
            return None
        return await stop_process(self._process, timeout)

    def _running(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise MeshError(f"envoy {self.name} was not started")
        return self._process


def _log_format(fields: Mapping[str, str]) -> str:
    """Envoy's log pattern for one JSON object per line (%j: the message, JSON-escaped;
    Envoy writes local time, which is UTC on the hosts this runs on)."""
    extra = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items())
    return (
        '{"time": "%Y-%m-%dT%T.%eZ", "level": "%l", "logger": "envoy.%n", "message": "%j"'
        + extra.replace("%", "%%")
        + "}"
    )


def _http(url: str, method: str, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):  # URLError is an OSError
        return 0, ""
