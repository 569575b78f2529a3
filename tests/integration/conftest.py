"""Fixtures for tests on real etcd, real TLS and real service processes.

One etcd serves the whole run (tests that restart etcd start their own); each mesh
gets its own key prefix, so meshes sharing the etcd never see each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.supervisor import EtcdServer
from tests.harness.mesh import MeshHarness, write_config


@pytest.fixture(scope="session")
async def etcd(
    tmp_path_factory: pytest.TempPathFactory, binaries: dict[str, str]
) -> AsyncIterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="session")
async def shop(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    """product x1, inventory x2, order x1, shared by every test that only calls them."""
    config = write_config(
        tmp_path_factory.mktemp("shop"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"product": 1, "inventory": 2, "order": 1},
    )
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        yield mesh
    finally:
        await mesh.aclose()
