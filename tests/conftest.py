"""Run-wide test setup: a clean environment, and fail fast without the binaries."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mesh.errors import MeshError
from mesh.supervisor import find_binary


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (CI's timeout, `timeout`, `kill`) unwinds like Ctrl-C,
    # so fixtures stop the processes they started.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(autouse=True, scope="session")
def _clean_environment() -> None:
    # Configuration comes in through arguments only; nothing may leak in from the shell.
    for name in list(os.environ):
        if name.startswith(("SHOPMESH_", "OTEL_")):
            del os.environ[name]


@pytest.fixture(scope="session")
def binaries() -> dict[str, str]:
    """Paths of the real binaries the integration tests drive."""
    try:
        return {name: find_binary(name) for name in ("etcd", "grpcurl")}
    except MeshError as error:
        pytest.fail(f"{error} (install with `make test`, which installs the wheels)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow folders: `-m "not integration and not e2e"` runs the unit tests."""
    for item in items:
        folder = Path(str(item.path)).parent.name
        if folder in ("integration", "e2e"):
            item.add_marker(folder)
