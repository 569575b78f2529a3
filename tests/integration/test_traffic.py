"""The traffic commands on a real sidecar mesh: product v1 and v2 (one instance each),
inventory, and order as the caller (its PlaceOrder calls product's BatchGetProducts
through order's sidecar). Which version answered is counted by order's sidecar, per
cluster, from grpc_stats' `...BatchGetProducts.total` counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.registry import authz_key, decode_authz
from mesh.supervisor import (
    CanaryPlan,
    EtcdServer,
    NatsServer,
    apply_authz,
    live_weights,
    run_canary,
    set_weights,
    traffic_report,
)
from tests.harness.envoy import admin_of, admin_post, counter
from tests.harness.mesh import REPO, MeshHarness, write_config

pytestmark = pytest.mark.integration

BATCH = "shop.product.v1.ProductService/BatchGetProducts"
CALLS = 500
IN_FLIGHT = 8


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    repo = yaml.safe_load((REPO / "mesh.yaml").read_text())["services"]
    ports = {"port": 0, "metrics_port": 0}
    services = {
        # Both versions declared, so that a split naming v2 is one the control plane takes.
        "product": {
            "versions": {"v1": 1, "v2": 1},
            **ports,
            "settings": repo["product"]["settings"],
        },
        # Stock for every order the tests place.
        "inventory": {**ports, "settings": {"opening_stock": {"sku-mug": 1_000_000}}},
    }
    config = write_config(
        tmp_path_factory.mktemp("traffic"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        events_endpoint=broker.endpoint,
        replicas={"product": 1, "inventory": 1, "order": 1, "payment": 1, "shipping": 1},
        overrides={"services": services},
        dataplane="sidecar",
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start(
            replicas={"product": 1, "inventory": 1, "order": 1, "payment": 1, "shipping": 1}
        )
        v2 = harness.spawn("product", "product-v2-1", version="v2")
        await v2.start()
        await v2.wait_ready(harness.etcd)
        yield harness
    finally:
        await harness.aclose()


def _runtime_modify(admin: str, key: str, value: str) -> None:
    admin_post(admin, f"/runtime_modify?{key}={value}")


@contextlib.contextmanager
def _runtime(admin: str, key: str, value: str) -> Iterator[None]:
    """An admin-layer override for the block; an empty value removes it after."""
    _runtime_modify(admin, key, value)
    try:
        yield
    finally:
        _runtime_modify(admin, key, "")


def _batch_calls(mesh: MeshHarness, version: str) -> int:
    """BatchGetProducts calls order's sidecar sent to `version` (final outcomes)."""
    name = f"cluster.product_{version}.grpc.shop.product.v1.ProductService.BatchGetProducts.total"
    return counter(admin_of(mesh, "order-1"), name)


class Orders:
    """PlaceOrder calls from the admin identity, counted."""

    def __init__(self, mesh: MeshHarness) -> None:
        self._stub = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))
        self.ok = 0
        self.failed: list[str] = []

    async def place(self) -> None:
        request = order_pb2.PlaceOrderRequest(
            customer_id="cust-traffic",
            request_id=f"req-{time.monotonic_ns()}",
            items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)],
        )
        try:
            await self._stub.PlaceOrder(request, timeout=10)
            self.ok += 1
        except Exception as error:  # every failure counts, whatever it is
            self.failed.append(repr(error)[:200])

    async def run(self, calls: int) -> None:
        """`calls` calls, IN_FLIGHT at a time."""
        left = iter(range(calls))

        async def worker() -> None:
            for _ in left:
                await self.place()

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    async def until(self, stop: asyncio.Event) -> None:
        async def worker() -> None:
            while not stop.is_set():
                await self.place()

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT // 2)))


@contextlib.asynccontextmanager
async def _steady_load(mesh: MeshHarness) -> AsyncIterator[Orders]:
    orders = Orders(mesh)
    stop = asyncio.Event()
    task = asyncio.create_task(orders.until(stop))
    try:
        yield orders
    finally:
        stop.set()
        await task


@pytest.fixture
async def as_declared(mesh: MeshHarness) -> AsyncIterator[None]:
    """Every call to v1 after the test, whatever it set."""
    yield
    rollout = await set_weights(mesh.config, mesh.etcd, "product", switch="v1")
    assert rollout.confirmed


@pytest.mark.parametrize(
    ("v2_percent", "low", "high"), [(0, 0, 0), (100, 1.0, 1.0), (20, 0.15, 0.25)]
)
@pytest.mark.usefixtures("as_declared")
async def test_the_split_sends_its_share_to_each_version(
    mesh: MeshHarness, v2_percent: int, low: float, high: float
) -> None:
    weights = {"v1": 100 - v2_percent, "v2": v2_percent}
    rollout = await set_weights(mesh.config, mesh.etcd, "product", weights=weights)
    assert rollout.confirmed, rollout
    assert {c.instance for c in rollout.sidecars} == set(mesh.instances)  # every sidecar
    assert all(c.weights == weights for c in rollout.sidecars)
    assert rollout.seconds < 2.0
    v1_before, v2_before = _batch_calls(mesh, "v1"), _batch_calls(mesh, "v2")
    orders = Orders(mesh)
    await orders.run(CALLS)
    assert orders.failed == []
    v1, v2 = _batch_calls(mesh, "v1") - v1_before, _batch_calls(mesh, "v2") - v2_before
    assert v1 + v2 == CALLS
    assert low <= v2 / CALLS <= high


@pytest.mark.usefixtures("as_declared")
async def test_a_blue_green_switch_fails_no_call(mesh: MeshHarness) -> None:
    async with _steady_load(mesh) as orders:
        await asyncio.sleep(0.3)
        to_green = await set_weights(mesh.config, mesh.etcd, "product", switch="v2")
        v2_at_switch = _batch_calls(mesh, "v2")
        await asyncio.sleep(0.5)
        assert _batch_calls(mesh, "v2") > v2_at_switch  # green takes the calls now
        back = await set_weights(mesh.config, mesh.etcd, "product", switch="v1")
        await asyncio.sleep(0.3)
    assert to_green.confirmed
    assert back.confirmed
    assert orders.ok >= 20  # a steady load spanned both switches (each order is a saga)
    assert orders.failed == []


@pytest.mark.usefixtures("as_declared")
async def test_a_canary_that_fails_is_rolled_back_naming_the_method(mesh: MeshHarness) -> None:
    said: list[str] = []
    plan = CanaryPlan("product", "v2", (50, 100), interval=1.5, max_error_rate=0.01)
    with _runtime(admin_of(mesh, "product-v2-1"), "fault.abort_percent", "50"):
        async with _steady_load(mesh):
            result = await run_canary(mesh.config, mesh.etcd, plan, said.append)
    assert result.outcome == "rolled back"
    assert result.stable == "v1"
    assert result.breach is not None
    assert result.breach.method == BATCH
    assert result.breach.rate > 0.01
    assert len(result.steps) == 1  # 100% was never reached
    assert await live_weights(mesh.config, mesh.etcd, "product") == {"v1": 100, "v2": 0}
    assert any(line.startswith("step 1/2: v2 at 50%: ") for line in said), said
    assert any(line.startswith(BATCH) for line in said), said


@pytest.mark.usefixtures("as_declared")
async def test_a_healthy_canary_is_promoted(mesh: MeshHarness) -> None:
    said: list[str] = []
    plan = CanaryPlan("product", "v2", (50, 100), interval=0.5, max_error_rate=0.01)
    async with _steady_load(mesh) as orders:
        result = await run_canary(mesh.config, mesh.etcd, plan, said.append)
    assert result.promoted, said
    assert [step.percent for step in result.steps] == [50, 100]
    assert all(step.verdict.calls > 0 for step in result.steps)
    assert await live_weights(mesh.config, mesh.etcd, "product") == {"v1": 0, "v2": 100}
    assert said[-1].startswith("promoted")
    assert orders.failed == []


@pytest.mark.usefixtures("as_declared")
async def test_an_interrupted_canary_rolls_back(mesh: MeshHarness) -> None:
    plan = CanaryPlan("product", "v2", (50, 100), interval=30.0, max_error_rate=0.01)
    canary = asyncio.create_task(run_canary(mesh.config, mesh.etcd, plan, lambda line: None))
    until = time.monotonic() + 5
    while await live_weights(mesh.config, mesh.etcd, "product") != {"v1": 50, "v2": 50}:
        assert time.monotonic() < until, "the canary never reached its first step"
        await asyncio.sleep(0.02)
    canary.cancel()  # what Ctrl-C does under asyncio.run
    with pytest.raises(asyncio.CancelledError):
        await canary
    assert await live_weights(mesh.config, mesh.etcd, "product") == {"v1": 100, "v2": 0}


@pytest.mark.usefixtures("as_declared")
async def test_a_runtime_override_on_one_sidecar_shows_as_drift(mesh: MeshHarness) -> None:
    await set_weights(mesh.config, mesh.etcd, "product", weights={"v1": 90, "v2": 10})
    with _runtime(admin_of(mesh, "order-1"), "weights.product.product_v2", "7"):
        report = await traffic_report(mesh.config, mesh.etcd, "product")
    sidecars = {s.instance: s for s in report.sidecars}
    assert set(sidecars) == set(mesh.instances)
    assert sidecars["order-1"].overrides == {"v2": 7}
    assert sidecars["order-1"].drifted
    assert not any(s.drifted for name, s in sidecars.items() if name != "order-1")
    assert all(s.xds == {"v1": 90, "v2": 10} for s in sidecars.values())
    document = report.to_json()
    assert document["drifted"] == ["order-1"]
    assert document["live"] == document["proxyless"] == {"v1": 90, "v2": 10}
    assert document["declared"] == {"v1": 1, "v2": 1}  # by instances: no policy.weights


async def test_apply_pushes_the_authz_table(mesh: MeshHarness) -> None:
    applied = await apply_authz(mesh.config, mesh.etcd)
    assert len(applied.rules) == len(mesh.config.authz) > 0
    raw = await mesh.etcd.get(authz_key(mesh.config.etcd.prefix))
    assert raw is not None
    assert decode_authz(raw) == mesh.config.authz
    again = await apply_authz(mesh.config, mesh.etcd)
    assert not again.changed


@pytest.mark.usefixtures("as_declared")
async def test_meshctl_traffic_sets_and_shows_the_split(mesh: MeshHarness) -> None:
    def meshctl(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mesh.cli", "--config", str(mesh.config.path), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=REPO)

    setting = await asyncio.to_thread(meshctl, "traffic", "product", "--weights", "v1=70,v2=30")
    assert setting.returncode == 0, setting.stderr
    assert setting.stdout.startswith("product: v1=70 v2=30 written to etcd\n")
    assert f"all {len(mesh.instances)} sidecars route by it" in setting.stdout
    report = await traffic_report(mesh.config, mesh.etcd, "product")
    assert report.live == {"v1": 70, "v2": 30}
    refused = await asyncio.to_thread(meshctl, "traffic", "product", "--weights", "v1=70,v9=30")
    assert refused.returncode == 2
    assert "product runs no version v9" in refused.stderr
    shown = await asyncio.to_thread(meshctl, "traffic", "product", "--json")
    assert json.loads(shown.stdout)["in_force"] == {"v1": 70, "v2": 30}
