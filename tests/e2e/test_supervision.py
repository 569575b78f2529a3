"""What `meshctl up` does after start-up: it restarts what dies (an instance, the embedded
etcd) with growing delays, answers `meshctl status` while etcd is down, restarts a
service's instances one at a time without failing a call, and keeps instance logs JSON
lines only, whatever a network peer sends.

One mesh serves the module: the repo's services plus `crashy` (tests/e2e/crashy.py),
which serves on its first start and crashes on every later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.client import DirectDataPlane, MeshClient
from mesh.config import ADMIN_IDENTITY, load_config
from mesh.identity import IdentityFiles, SpiffeId, channel_credentials
from mesh.registry import Endpoint, EtcdClient, EtcdDiscovery, services_root
from mesh.state import InstanceRecord, MeshState
from mesh.supervisor import read_state
from tests.e2e.conftest import SAGA_SERVICES, Workspace, alive, make_workspace
from tests.harness.mesh import REPO

SHOP = {"product-1", "inventory-1", "inventory-2", "order-1"}
T = TypeVar("T")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, binaries: dict[str, str]) -> Iterator[Workspace]:
    workspace = make_workspace(
        tmp_path_factory.mktemp("supervised"),
        services=SAGA_SERVICES,
        crashy={"module": "tests.e2e.crashy"},
    )
    # PYTHONPATH: the instances run in the workspace and must import tests.e2e.crashy.
    with workspace.detached_up(env={"PYTHONPATH": str(REPO)}, down=True):
        yield workspace


def _state(workspace: Workspace) -> MeshState:
    state = read_state(workspace.root / ".mesh")
    assert state is not None, "state.json is gone"
    return state


def _record(workspace: Workspace, instance_id: str) -> InstanceRecord:
    (record,) = [r for r in _state(workspace).instances if r.instance_id == instance_id]
    return record


def _until(what: str, check: Callable[[], T | None], timeout: float = 20) -> T:
    """Poll `check` every 50 ms until it returns something, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)
    return found


def _record_when(
    workspace: Workspace, instance_id: str, test: Callable[[InstanceRecord], bool]
) -> Callable[[], InstanceRecord | None]:
    """A check for _until: the instance's record, once `test` holds for it."""

    def check() -> InstanceRecord | None:
        record = _record(workspace, instance_id)
        return record if test(record) else None

    return check


def _status(workspace: Workspace) -> dict[str, dict[str, Any]]:
    result = workspace.meshctl("status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["id"]: row for row in json.loads(result.stdout)}


def _supervisor_log(workspace: Workspace) -> str:
    return (workspace.root / ".mesh" / "logs" / "supervisor.log").read_text()


# -- crashes ---------------------------------------------------------------------------


def test_a_killed_instance_comes_back_serving_with_one_restart(mesh: Workspace) -> None:
    before = _record(mesh, "product-1")
    assert before.pid is not None
    assert before.restarts == 0

    os.kill(before.pid, signal.SIGKILL)
    after = _until(
        "product-1 SERVING again",
        _record_when(mesh, "product-1", lambda r: r.state == "SERVING" and r.pid != before.pid),
    )

    row = _status(mesh)["product-1"]
    assert (row["health"], row["restarts"], row["pid"]) == ("SERVING", 1, after.pid)
    assert alive(after.pid or 0)
    log = _supervisor_log(mesh)
    assert "product-1 exited with code -9; restarting in 1s" in log
    assert f"product-1 restarted (restart 1, pid {after.pid})" in log


def test_an_instance_that_keeps_crashing_shows_crashloop_with_growing_delays(
    mesh: Workspace,
) -> None:
    starts = mesh.root / ".mesh" / "crashy-1.starts"
    first = _record(mesh, "crashy-1")
    assert first.pid is not None
    killed = time.time()

    os.kill(first.pid, signal.SIGKILL)  # every later start crashes at once
    # After the third crash in a row it waits 4 s: time enough to ask meshctl.
    _until(
        "crashy-1 waiting after its third crash",
        _record_when(mesh, "crashy-1", lambda r: r.state == "CRASHLOOP" and r.restarts == 2),
    )
    row = _status(mesh)["crashy-1"]
    assert (row["health"], row["restarts"], row["pid"]) == ("CRASHLOOP", 2, None)
    times = _until("a fourth start", lambda: _start_times(starts, at_least=4), timeout=15)

    waits = [times[1] - killed, times[2] - times[1], times[3] - times[2]]
    assert waits[0] >= 1.0  # 1 s, 2 s, 4 s: never a tight loop
    assert waits[1] >= 2.0
    assert waits[2] >= 4.0
    # The delays themselves, as the supervisor chose them (start-up time, which varies
    # with the machine's load, is in the waits above but not here):
    log = _supervisor_log(mesh)
    delays = re.findall(r"crashy-1 exited with code -?\d+.*?; restarting in (\d+)s", log)
    assert delays[:3] == ["1", "2", "4"]
    assert "crashy-1 exited with code 3, crash 3 in a row; restarting in 4s" in log
    # A child's last words reach its log, wrapped, though it died at once.
    records = _json_lines(mesh.root / ".mesh" / "logs" / "crashy-1.log")
    crashes = [r for r in records if "crashing on purpose" in str(r["message"])]
    assert len(crashes) >= 3
    assert {(r["logger"], r["level"], r["instance"]) for r in crashes} == {
        ("stderr", "error", "crashy-1")
    }


def test_a_rolling_restart_that_fails_says_why_and_shows_the_log(mesh: Workspace) -> None:
    """crashy's stand-in serves (its first start), crashy-1 crashes when started again."""
    result = mesh.meshctl("restart", "crashy")

    assert result.returncode == 1, result.stdout
    assert result.stdout.startswith("crashy-1: stand-in crashy-1-surge SERVING at 127.0.0.1:")
    assert "crashy-1: stand-in crashy-1-surge stopped" in result.stdout
    assert "meshctl: crashy-1 is not SERVING again: crashy-1 exited with code 3" in result.stderr
    assert "crashing on purpose" in result.stderr  # from the log's tail
    assert "crashy-1-surge" not in _status(mesh)


def _start_times(path: Path, *, at_least: int) -> list[float] | None:
    """When crashy started, once it has started `at_least` times."""
    times = [float(line) for line in path.read_text().split()]
    return times if len(times) >= at_least else None


def test_etcd_down_then_killed_status_answers_and_etcd_comes_back(mesh: Workspace) -> None:
    state = _state(mesh)
    assert state.etcd_pid is not None
    os.kill(state.etcd_pid, signal.SIGSTOP)  # down for sure while meshctl asks
    try:
        result = mesh.meshctl("status", "--json")
        assert result.returncode == 0, result.stderr
        assert "etcd is unreachable" in result.stderr
        rows = {row["id"]: row for row in json.loads(result.stdout)}
        assert {i for i in SHOP if rows[i]["health"] == "SERVING" and rows[i]["address"]} == SHOP
        table = mesh.meshctl("status")
        assert table.returncode == 0, table.stderr
        assert f"etcd {state.etcd_endpoint}: RUNNING, not answering" in table.stdout
    finally:
        os.kill(state.etcd_pid, signal.SIGKILL)  # works on a stopped process too

    def etcd_restarted() -> MeshState | None:
        now = _state(mesh)
        return now if now.etcd_state == "RUNNING" and now.etcd_pid != state.etcd_pid else None

    restarted = _until("etcd restarted", etcd_restarted)
    assert restarted.etcd_restarts == 1
    assert restarted.etcd_endpoint == state.etcd_endpoint
    registered = asyncio.run(_until_registered(mesh, restarted, SHOP))
    assert {e.instance_id for e in registered} >= SHOP
    table = mesh.meshctl("status")
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    assert (
        f"etcd {state.etcd_endpoint}: RUNNING, pid {restarted.etcd_pid}, restarts 1" in table.stdout
    )


async def _until_registered(
    workspace: Workspace, state: MeshState, instance_ids: set[str]
) -> list[Endpoint]:
    """Every instance in `instance_ids` registered by its current process."""
    pids = {r.instance_id: str(r.pid) for r in state.instances}
    prefix = services_root(load_config(workspace.root / "mesh.yaml").etcd.prefix)
    deadline = time.monotonic() + 20
    async with EtcdClient(state.etcd_endpoint, timeout=1.0) as etcd:
        while True:
            with contextlib.suppress(Exception):
                _, items = await etcd.get_prefix(prefix)
                endpoints = [Endpoint.from_json(value) for _, value in items]
                current = {
                    e.instance_id for e in endpoints if e.metadata["pid"] == pids[e.instance_id]
                }
                if current >= instance_ids:
                    return endpoints
            assert time.monotonic() < deadline, "instances did not register again"
            await asyncio.sleep(0.05)


# -- rolling restart ------------------------------------------------------------------


@dataclass
class Load:
    """Calls made in a loop by a few workers; every failure is kept."""

    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def _mesh_client(workspace: Workspace) -> AsyncIterator[MeshClient]:
    """A mesh client as the admin identity, following the workspace mesh's etcd."""
    config = load_config(workspace.root / "mesh.yaml")
    etcd = EtcdClient(_state(workspace).etcd_endpoint)
    client = MeshClient(
        DirectDataPlane(
            EtcdDiscovery(etcd, config.etcd.prefix),
            channel_credentials(IdentityFiles(config.certs_dir, ADMIN_IDENTITY)),
            config.client,
            identity_of=functools.partial(SpiffeId, config.trust_domain, config.namespace),
        )
    )
    try:
        yield client
    finally:
        await client.aclose()
        await etcd.aclose()


async def _worker(load: Load, call: Callable[[], Any]) -> None:
    while not load.stop.is_set():
        try:
            await call()
        except Exception as error:
            load.failures.append(f"{type(error).__name__}: {error}")
        else:
            load.ok += 1


async def _until_calls(load: Load, count: int, timeout: float = 20) -> None:
    """Until `count` calls have succeeded in all."""
    deadline = time.monotonic() + timeout
    while True:
        if load.ok >= count:
            return
        assert time.monotonic() < deadline, f"{load.ok} calls, not {count}: {load.failures[:3]}"
        await asyncio.sleep(0.02)


async def test_rolling_restarts_fail_no_call_under_a_steady_load(mesh: Workspace) -> None:
    before = {i: _record(mesh, i) for i in SHOP}
    async with _mesh_client(mesh) as client:
        products = product_pb2_grpc.ProductServiceStub(client.channel("product"))  # type: ignore[no-untyped-call]
        orders = order_pb2_grpc.OrderServiceStub(client.channel("order"))  # type: ignore[no-untyped-call]
        stock = inventory_pb2_grpc.InventoryServiceStub(client.channel("inventory"))  # type: ignore[no-untyped-call]
        await stock.AdjustStock(
            inventory_pb2.AdjustStockRequest(product_id="sku-mug", delta=100_000, reason="load")
        )
        get = functools.partial(
            products.GetProduct, product_pb2.GetProductRequest(product_id="sku-espresso")
        )

        def place() -> Any:
            item = order_pb2.OrderItem(product_id="sku-mug", quantity=1)
            request_id = uuid.uuid4().hex
            return orders.PlaceOrder(
                order_pb2.PlaceOrderRequest(customer_id="load", items=[item], request_id=request_id)
            )

        load = Load()
        workers = [asyncio.create_task(_worker(load, call)) for call in (get, get, place, place)]
        try:
            await _until_calls(load, 20)
            results = {}
            for service in ("product", "inventory"):
                counted = load.ok
                results[service] = await asyncio.to_thread(mesh.meshctl, "restart", service)
                assert load.ok - counted >= 20, f"too few calls during the {service} restart"
            await _until_calls(load, load.ok + 20)  # and calls go on afterwards
        finally:
            load.stop.set()
            await asyncio.gather(*workers)

    for service, result in results.items():
        assert result.returncode == 0, f"{service}:\n{result.stdout}{result.stderr}"
    assert load.failures == []
    product_steps = results["product"].stdout.splitlines()
    assert product_steps[0].startswith("product-1: stand-in product-1-surge SERVING at 127.0.0.1:")
    assert "product-1: stand-in product-1-surge stopped (exit code 0)" in product_steps
    inventory_steps = results["inventory"].stdout.splitlines()
    assert "surge" not in results["inventory"].stdout  # the other instance kept serving
    # One at a time: inventory-2 stops only once inventory-1 is SERVING again.
    assert _index(inventory_steps, "inventory-1: SERVING at") < _index(
        inventory_steps, "inventory-2: stopping"
    )
    rows = _status(mesh)
    assert "product-1-surge" not in rows
    for instance_id in SHOP - {"order-1"}:
        row = rows[instance_id]
        assert row["health"] == "SERVING"
        assert row["pid"] != before[instance_id].pid
        assert row["restarts"] == before[instance_id].restarts  # a rolling restart is no crash
    assert rows["order-1"]["pid"] == before["order-1"].pid


def _index(lines: list[str], prefix: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


def test_restart_refuses_an_unknown_service(mesh: Workspace) -> None:
    result = mesh.meshctl("restart", "nothing")
    assert result.returncode == 2
    assert "no service 'nothing'" in result.stderr


# -- logs ------------------------------------------------------------------------------


def _json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)  # fails on any line that is not JSON
        assert isinstance(record, dict), f"{path.name}:{number} is not an object: {line}"
        records.append(record)
    return records


@pytest.fixture(scope="module")
def direct_mesh(
    tmp_path_factory: pytest.TempPathFactory, binaries: dict[str, str]
) -> Iterator[Workspace]:
    """A proxyless mesh: its instances terminate TLS themselves, in gRPC core."""
    workspace = make_workspace(
        tmp_path_factory.mktemp("direct"), dataplane="direct", services=SAGA_SERVICES
    )
    with workspace.detached_up(down=True):
        yield workspace


def test_a_peer_s_server_name_leaves_only_json_lines_in_the_log(direct_mesh: Workspace) -> None:
    mesh = direct_mesh
    host, _, port = _status(mesh)["product-1"]["address"].rpartition(":")
    log = mesh.root / ".mesh" / "logs" / "product-1.log"
    forged = 'x\nE1201 21:50:04.795449 2584 forged.cc:1] {"level": "info", "logger": "mesh"}'
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # The server wants a client certificate: the handshake fails, after gRPC has
    # logged the server name it did not know.
    with (
        contextlib.suppress(OSError),  # ssl.SSLError included
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=forged) as tls,
    ):
        tls.recv(1)

    def logged() -> list[dict[str, Any]] | None:
        records = _json_lines(log)
        return records if any("server name: x" in str(r["message"]) for r in records) else None

    records = _until("gRPC's line about the server name", logged)
    assert all(isinstance(record["message"], str) for record in records)
    grpc_lines = [r for r in records if r["logger"] == "grpc"]
    assert any(r["message"] == "No match found for server name: x" for r in grpc_lines)
    for path in (mesh.root / ".mesh" / "logs").glob("*-*.log"):  # every instance's log
        _json_lines(path)


def test_every_log_of_a_sidecar_mesh_is_json_lines(mesh: Workspace) -> None:
    logs = mesh.root / ".mesh" / "logs"
    sidecar_logs = sorted(logs.glob("*.envoy.log"))
    assert {path.name.removesuffix(".envoy.log") for path in sidecar_logs} >= set(SHOP)
    for path in logs.glob("*-*.log"):  # instances' and their sidecars'
        for record in _json_lines(path):
            assert {"time", "level", "logger", "message"} <= record.keys(), path.name
