"""Registration under a lease and discovery by watch, against a real etcd that this
module stops, restarts and wipes (so it has its own)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.errors import RegistryUnavailable
from mesh.registry import Endpoint, EtcdClient, EtcdDiscovery, Registration, instance_key
from mesh.supervisor import EtcdServer, InstanceProcess, NatsServer, find_binary, free_port
from tests.harness.mesh import MeshHarness, write_config

TTL = 2


@pytest.fixture(scope="module")
async def private_etcd(
    tmp_path_factory: pytest.TempPathFactory, binaries: dict[str, str]
) -> AsyncIterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("private-etcd") / "data")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    private_etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("registry"),
        etcd_endpoint=private_etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={"product": 1, "inventory": 2},
    )
    harness = MeshHarness(config, private_etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


async def _all_registered_within(mesh: MeshHarness, timeout: float) -> float:
    """Seconds until every instance's key is in etcd again; fails after `timeout`."""
    keys = [instance.key for instance in mesh.instances.values()]
    started = time.monotonic()
    async with EtcdClient(mesh.etcd_endpoint, timeout=0.5) as etcd:
        while True:
            try:
                present = [await etcd.get(key) is not None for key in keys]
            except RegistryUnavailable:
                present = [False]
            if all(present):
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"not re-registered: {keys}\n{mesh.logs()}"
            await asyncio.sleep(0.05)


async def _registered_throughout(mesh: MeshHarness, seconds: float) -> None:
    """Every instance's key stays in etcd for `seconds` (checked every 50 ms)."""
    keys = [instance.key for instance in mesh.instances.values()]
    until = time.monotonic() + seconds
    async with EtcdClient(mesh.etcd_endpoint, timeout=0.5) as etcd:
        while time.monotonic() < until:
            missing = [key for key in keys if await etcd.get(key) is None]
            assert missing == [], f"lost {missing}\n{mesh.logs()}"
            await asyncio.sleep(0.05)


async def test_stopped_then_restarted_etcd_has_every_instance_again(
    mesh: MeshHarness, private_etcd: EtcdServer
) -> None:
    await private_etcd.stop()
    await asyncio.sleep(TTL * 1.5)  # long enough for every lease to have lapsed
    await private_etcd.start()
    await _all_registered_within(mesh, 2 * TTL)
    # etcd restores its leases on restart with a fresh TTL, so the keys are back at
    # once whether or not anyone keeps them alive: only keys that outlive that TTL
    # show that every instance registered again.
    await _registered_throughout(mesh, 1.5 * TTL)


async def test_etcd_restarted_without_its_data_has_every_instance_again(
    mesh: MeshHarness, private_etcd: EtcdServer
) -> None:
    await private_etcd.kill()
    await private_etcd.restart(wipe=True)  # no keys, no leases: everything must be redone
    await _all_registered_within(mesh, 2 * TTL)


async def test_instances_keep_serving_each_other_while_etcd_is_down(
    mesh: MeshHarness, private_etcd: EtcdServer
) -> None:
    from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    stub = inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))
    await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-x"))  # endpoints known
    await private_etcd.stop()
    try:
        for _ in range(10):  # discovery keeps the last known endpoints
            await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-x"))
    finally:
        await private_etcd.start()
    await _all_registered_within(mesh, 2 * TTL)


# -- the registry objects in this process, on the same etcd ----------------------------------


def _endpoint(instance_id: str, port: int) -> Endpoint:
    return Endpoint("probe", instance_id, f"127.0.0.1:{port}", metadata={"zone": "a"})


async def _next_set(updates: AsyncIterator[frozenset[Endpoint]]) -> frozenset[Endpoint]:
    return await asyncio.wait_for(anext(updates), 5)


async def test_discovery_follows_registrations_and_deregistrations(
    private_etcd: EtcdServer,
) -> None:
    async with EtcdClient(private_etcd.endpoint) as etcd:
        prefix = f"/disc-{time.monotonic_ns()}"
        updates = EtcdDiscovery(etcd, prefix).endpoints("probe")
        assert await _next_set(updates) == frozenset()
        first = Registration(etcd, prefix, _endpoint("a", 1001), TTL)
        second = Registration(etcd, prefix, _endpoint("b", 1002), TTL)
        await first.start()
        assert {e.instance_id for e in await _next_set(updates)} == {"a"}
        await second.start()
        assert {e.instance_id for e in await _next_set(updates)} == {"a", "b"}
        await first.aclose()
        assert {e.instance_id for e in await _next_set(updates)} == {"b"}
        await second.aclose()
        assert await _next_set(updates) == frozenset()
        await updates.aclose()  # type: ignore[attr-defined]


async def test_registration_comes_back_after_its_lease_is_revoked(private_etcd: EtcdServer) -> None:
    async with EtcdClient(private_etcd.endpoint) as etcd:
        prefix = f"/lease-{time.monotonic_ns()}"
        registration = Registration(etcd, prefix, _endpoint("a", 1001), TTL)
        await registration.start()
        key = instance_key(prefix, "probe", "a")
        try:
            lost = registration.lease
            assert lost is not None
            await etcd.revoke(lost)  # as if the lease had expired during a partition
            started = time.monotonic()
            while registration.registrations < 2:  # it notices on its next keepalive
                assert time.monotonic() - started < 2 * TTL, "not registered again"
                await asyncio.sleep(0.05)
            assert registration.lease not in (None, lost)
            assert await etcd.get(key) is not None
        finally:
            await registration.aclose()
        assert await etcd.get(key) is None


async def test_malformed_registry_entries_are_ignored(private_etcd: EtcdServer) -> None:
    async with EtcdClient(private_etcd.endpoint) as etcd:
        prefix = f"/bad-{time.monotonic_ns()}"
        await etcd.put(instance_key(prefix, "probe", "junk"), b"not json")
        good = Registration(etcd, prefix, _endpoint("good", 1003), TTL)
        await good.start()
        try:
            updates = EtcdDiscovery(etcd, prefix).endpoints("probe")
            assert {e.instance_id for e in await _next_set(updates)} == {"good"}
            await updates.aclose()  # type: ignore[attr-defined]
        finally:
            await good.aclose()
            await etcd.delete(instance_key(prefix, "probe", "junk"))


async def test_sigterm_while_registering_stops_the_instance_at_once(
    tmp_path_factory: pytest.TempPathFactory, certs_dir: Path
) -> None:
    """An instance that cannot reach etcd keeps trying for 10 s; a SIGTERM meanwhile
    ends it then, with exit code 0, not when the attempts run out."""
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = write_config(
        tmp_path_factory.mktemp("stuck"),
        etcd_endpoint=nowhere,
        certs_dir=certs_dir,
        replicas={"product": 1},
    )
    instance = InstanceProcess(config, config.service("product"), "product-stuck", nowhere)
    await instance.start()
    try:
        until = time.monotonic() + 20
        while "failed, retrying" not in instance.log_tail() and time.monotonic() < until:
            assert instance.returncode is None, instance.log_tail()
            await asyncio.sleep(0.05)
        assert "failed, retrying" in instance.log_tail()

        instance.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(instance.wait(), 5)  # well inside the 10 s of attempts

        assert code == 0, instance.log_tail()
        assert "stopped while registering" in instance.log_tail()
    finally:
        await instance.stop()


async def test_a_registration_in_steady_state_keeps_one_lease_and_one_put(
    private_etcd: EtcdServer, binaries: dict[str, str]
) -> None:
    """Over three TTLs the keepalive stream refreshes one lease: no re-registration,
    no new lease, and etcd holds the key as first put, under that lease."""
    async with EtcdClient(private_etcd.endpoint) as etcd:
        prefix = f"/steady-{time.monotonic_ns()}"
        registration = Registration(etcd, prefix, _endpoint("a", 1001), TTL)
        await registration.start()
        key = instance_key(prefix, "probe", "a")
        try:
            lease = registration.lease
            assert lease is not None
            # The passage of time is the stimulus here: three leases' worth of it.
            until = time.monotonic() + 3 * TTL
            while time.monotonic() < until:
                assert (registration.lease, registration.registrations) == (lease, 1)
                await asyncio.sleep(0.2)
            stored = await _stored(private_etcd.endpoint, key)
        finally:
            await registration.aclose()
    assert (stored["lease"], stored["version"]) == (lease, 1)  # one put, that lease


async def _stored(endpoint: str, key: str) -> dict[str, int]:
    """etcd's own record of `key` (its lease and version), as etcdctl prints it."""
    process = await asyncio.create_subprocess_exec(
        find_binary("etcdctl"), f"--endpoints={endpoint}", "get", key, "-w", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, errors = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, errors.decode()
    [kv] = json.loads(output)["kvs"]
    return {"lease": int(kv["lease"]), "version": int(kv["version"])}
