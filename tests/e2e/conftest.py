"""meshctl, run as users run it, in a folder of its own with the repo's mesh.yaml
on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mesh.supervisor import read_state
from tests.harness.mesh import REPO

BIN = Path(sys.executable).parent


@dataclass
class Workspace:
    """A folder with a mesh.yaml, where meshctl commands run."""

    root: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def meshctl(
        self, *args: str, timeout: float = 90, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """meshctl `args` run in this folder, with `env` added to the environment."""
        return subprocess.run(
            [str(BIN / "meshctl"), *args], cwd=self.root, env={**self.env(), **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def pids(self) -> list[int]:
        """Every process the running mesh recorded: supervisor, etcd, control plane,
        event broker, instances (each instance's sidecar dies with it)."""
        state = read_state(self.root / ".mesh")
        if state is None:
            return []
        servers = [pid for pid in (state.etcd_pid, state.controlplane_pid, state.events_pid) if pid]
        return [state.supervisor_pid, *servers,
                *(i.pid for i in state.instances if i.pid is not None)]  # fmt: skip

    def kill_leftovers(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def foreground_up(self) -> Iterator[subprocess.Popen[str]]:
        """`meshctl up` in the foreground, output in a pipe; killed, with whatever it
        started, if still running at the end."""
        process = subprocess.Popen(
            [str(BIN / "meshctl"), "up"], cwd=self.root, env=self.env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            self.kill_leftovers()

    @contextlib.contextmanager
    def detached_up(
        self, *, env: Mapping[str, str] | None = None, down: bool = False
    ) -> Iterator[list[int]]:
        """`meshctl up --detach` (with `env` added); yields the pids it recorded
        (supervisor first). At the end, `meshctl down` if `down`, then whatever the
        mesh recorded and is still there is killed."""
        try:
            started = self.meshctl("up", "--detach", env=env)
            assert started.returncode == 0, started.stdout + started.stderr
            yield self.pids()
        finally:
            pids = self.pids()
            if down:
                self.meshctl("down")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


SAGA_SERVICES = ("product", "inventory", "order", "payment", "shipping", "user", "auth", "edge")
"""The services of the calls and the saga, without the event consumers (catalog, profile,
notification, analytics, audit): enough for a test of meshctl's own mechanics, which
starts a third fewer processes on the two cores."""


def make_workspace(
    root: Path,
    *,
    dataplane: str | None = None,
    services: Collection[str] | None = None,
    **service_overrides: dict[str, object],
) -> Workspace:
    """root/mesh.yaml: the repo's (its data plane too, unless `dataplane` says another;
    only `services` of it, if given, plus any overridden), with every port free and the
    state kept in root."""
    document = yaml.safe_load((REPO / "mesh.yaml").read_text())
    if services is not None:
        document["services"] = {
            name: spec for name, spec in document["services"].items() if name in services
        }
    if dataplane is not None:
        document["mesh"]["dataplane"] = dataplane
    document["etcd"].update(client_port=0, prefix="/e2e", lease_ttl=2)
    document["server"] = {"drain_delay": 0.3, "grace_period": 5.0}
    document["controlplane"] = {"port": 0}
    document["events"] = {"port": 0}
    for name, spec in document["services"].items():
        spec.update(port=0, metrics_port=0, envoy_admin_port=0, **service_overrides.get(name, {}))
        if "http_port" in spec.get("settings", {}):
            spec["settings"]["http_port"] = 0
    for name, spec in service_overrides.items():
        document["services"].setdefault(name, spec)
    root.mkdir(parents=True, exist_ok=True)
    (root / "mesh.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return Workspace(root)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; it only waits for its parent to reap it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, binaries: dict[str, str]
) -> Iterator[Workspace]:
    """A mesh started with `meshctl up --detach`, stopped (or killed) afterwards."""
    workspace = make_workspace(tmp_path_factory.mktemp("workspace"))
    with workspace.detached_up(down=True):
        yield workspace
