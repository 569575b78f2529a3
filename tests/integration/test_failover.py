"""Instances dying under steady load: clients must not notice.

kill -9 gives no warning: idempotent calls in flight are retried on another instance,
and the dead instance's lease expires within its TTL. SIGTERM is announced: the
instance deregisters and drains first, so no call of any kind fails; a call still in
flight then gets the grace period to finish, and one that outlives it is ended.
An instance that stalls (SIGSTOP) is waited for while a new connection's handshake is
within client.connect_timeout, and given up on after it; once connected, an idempotent
call gives it client.retry.per_try_timeout before it goes to another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.type.money_pb2 import Money
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.product.v1 import events_pb2 as product_events
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.client import ServiceChannel
from mesh.config import ADMIN_IDENTITY, RetryPolicy
from mesh.events import NatsEventBus
from mesh.identity import IdentityFiles, channel_credentials
from mesh.supervisor import EtcdServer, InstanceProcess, NatsServer
from services.common.messaging import new_event
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.metrics import scrape_instance, value
from tests.harness.nats import nats_server

Call = Callable[[int], Awaitable[object]]


@pytest.fixture(scope="module")
async def pool(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
) -> AsyncIterator[MeshHarness]:
    """Three inventory instances, stocking sku-failover: its ProductCreated is on the
    broker before they start (as product would have published it), so they know it
    once they serve."""
    config = write_config(
        tmp_path_factory.mktemp("failover"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"inventory": 3},
        events_endpoint=broker.endpoint,
    )
    created = product_events.ProductCreated(
        product_id="sku-failover", name="Failover load", price=Money(currency_code="USD", units=1)
    )
    async with await NatsEventBus.connect(broker.endpoint) as bus:
        await bus.publish("product", new_event("product-sku-failover", 1, created))
    mesh = MeshHarness(config, etcd.endpoint)
    try:
        await mesh.start()
        stub = inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))
        await stub.AdjustStock(
            inventory_pb2.AdjustStockRequest(
                product_id="sku-failover", delta=1_000_000, reason="test load"
            )
        )
        yield mesh
    finally:
        await mesh.aclose()


@dataclass
class Load:
    """Loops that call steadily until stopped, keeping every failure."""

    calls: dict[str, Call]
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, loops_per_kind: int = 2) -> None:
        for name, call in self.calls.items():
            for _ in range(loops_per_kind):
                self._tasks.append(asyncio.create_task(self._loop(name, call)))

    async def _loop(self, name: str, call: Call) -> None:
        sequence = 0
        while not self._stop.is_set():
            sequence += 1
            try:
                await call(sequence)
                self.ok += 1
            except grpc.aio.AioRpcError as error:
                self.failures.append(f"{name}: {error.code().name} {error.details()}")

    async def until_ok(self, count: int, timeout: float = 20) -> None:
        target = self.ok + count
        until = time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < until, (
                f"only {self.ok} calls succeeded; failures: {self.failures[:5]}"
            )
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def _load(mesh: MeshHarness, kinds: list[str]) -> Load:
    stub = inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))
    run = uuid.uuid4().hex[:8]

    async def get(_: int) -> object:
        return await stub.GetStock(inventory_pb2.GetStockRequest(product_id="sku-failover"))

    async def adjust(_: int) -> object:  # not idempotent: never retried by the client
        return await stub.AdjustStock(
            inventory_pb2.AdjustStockRequest(product_id="sku-failover", delta=1)
        )

    async def reserve(sequence: int) -> object:
        item = inventory_pb2.ReservationItem(product_id="sku-failover", quantity=1)
        order_id = f"ord-{run}-{id(asyncio.current_task())}-{sequence}"
        return await stub.ReserveStock(
            inventory_pb2.ReserveStockRequest(order_id=order_id, items=[item])
        )

    calls: dict[str, Call] = {"GetStock": get, "AdjustStock": adjust, "ReserveStock": reserve}
    return Load({kind: calls[kind] for kind in kinds})


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    """Poll `condition` every 50 ms until it holds; fail after `timeout` s."""
    until = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < until, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def _gone_from_etcd(mesh: MeshHarness, key: str, timeout: float) -> float:
    """Seconds until `key` disappears from etcd."""
    started = time.monotonic()

    async def gone() -> bool:
        return await mesh.etcd.get(key) is None

    await _until(gone, f"{key} left etcd", timeout)
    return time.monotonic() - started


async def test_kill_9_fails_no_idempotent_call_and_leaves_etcd_within_ttl(
    pool: MeshHarness,
) -> None:
    load = _load(pool, ["GetStock", "ReserveStock"])
    load.start()
    try:
        await load.until_ok(50)
        victim = pool.instances["inventory-1"]
        victim.send_signal(signal.SIGKILL)
        gone_after = await _gone_from_etcd(pool, victim.key, timeout=pool.config.etcd.lease_ttl + 5)
        await load.until_ok(100)
    finally:
        await load.stop()
    assert load.failures == []
    # etcd's lessor checks expiry every 500 ms, so allow that much past the TTL.
    assert gone_after <= pool.config.etcd.lease_ttl + 0.5


async def _watch_health(mesh: MeshHarness, address: str, seen: list[str]) -> None:
    """Append each status the instance at `address` reports until its stream ends."""
    credentials = channel_credentials(IdentityFiles(mesh.config.certs_dir, ADMIN_IDENTITY))
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        with contextlib.suppress(grpc.aio.AioRpcError):  # the server going away ends it
            async for reply in stub.Watch(health_pb2.HealthCheckRequest()):
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def test_sigterm_fails_no_call_of_any_kind(pool: MeshHarness) -> None:
    load = _load(pool, ["GetStock", "AdjustStock", "ReserveStock"])
    victim = pool.instances["inventory-2"]
    statuses: list[str] = []
    watcher = asyncio.create_task(_watch_health(pool, victim.endpoint.address, statuses))
    load.start()
    try:
        await load.until_ok(50)
        victim.send_signal(signal.SIGTERM)
        gone_after = await _gone_from_etcd(pool, victim.key, timeout=2)
        exit_code = await asyncio.wait_for(victim.wait(), 15)
        await load.until_ok(100)
        await asyncio.wait_for(watcher, 5)
    finally:
        watcher.cancel()
        await load.stop()
    assert load.failures == []
    assert exit_code == 0
    assert gone_after < pool.config.server.drain_delay  # deregistered before it stopped serving
    assert statuses == ["SERVING", "NOT_SERVING"]  # health said so before it went away


GRACE = 4.0


@pytest.fixture(scope="module")
async def stoppable(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    """product, inventory, payment and shipping; each test starts (and stops) its own
    order instance.
    Leases of 30 s (kept alive every 10 s) outlive every pause below, so a stopped
    instance keeps its key."""
    root = tmp_path_factory.mktemp("grace")
    async with nats_server(root / "broker") as broker:  # not pool's: its inventory's own
        config = write_config(
            root,
            etcd_endpoint=etcd.endpoint,
            certs_dir=certs_dir,
            replicas={"product": 1, "inventory": 1, "order": 1, "payment": 1, "shipping": 1},
            overrides={"etcd": {"lease_ttl": 30}, "server": {"grace_period": GRACE}},
            events_endpoint=broker.endpoint,
        )
        mesh = MeshHarness(config, etcd.endpoint)
        try:
            await mesh.start({"product": 1, "inventory": 1, "payment": 1, "shipping": 1})
            yield mesh
        finally:
            await mesh.aclose()


@contextlib.asynccontextmanager
async def _paused(instance: InstanceProcess) -> AsyncIterator[None]:
    """`instance` stopped (SIGSTOP): calls to it hang until it goes on (SIGCONT).
    Should this test process die meanwhile, a detached shell goes on with it after
    30 s, so that it can act on the SIGTERM its parent's death sent it."""
    instance.send_signal(signal.SIGSTOP)
    backstop = await asyncio.create_subprocess_exec(
        "sh", "-c", f"sleep 30; kill -CONT {instance.pid}", start_new_session=True
    )
    try:
        yield
    finally:
        instance.send_signal(signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(backstop.pid, signal.SIGKILL)  # the shell and its sleep
        await backstop.wait()


async def _product_calls_started(order: InstanceProcess) -> float:
    """BatchGetProducts calls the order instance has started, by its client metrics."""
    samples = await asyncio.to_thread(scrape_instance, order)
    return value(
        samples,
        "grpc_client_started_total",
        grpc_type="unary",
        grpc_service="shop.product.v1.ProductService",
        grpc_method="BatchGetProducts",
    )


@contextlib.asynccontextmanager
async def _order_stuck_on_product(
    mesh: MeshHarness, instance_id: str
) -> AsyncIterator[tuple[InstanceProcess, asyncio.Future[Any]]]:
    """A fresh order instance, and a PlaceOrder call to it that waits for the product
    instance, stopped meanwhile. Should the block fail, the call is cancelled."""
    order = await mesh.start_one("order", instance_id)
    stub = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))
    request = order_pb2.PlaceOrderRequest(
        customer_id="grace", items=[order_pb2.OrderItem(product_id="sku-mug", quantity=1)]
    )
    await stub.PlaceOrder(request, timeout=10)  # every channel on the way is up
    before = await _product_calls_started(order)
    async with _paused(mesh.instances["product-1"]):
        call = asyncio.ensure_future(stub.PlaceOrder(request, timeout=30))
        try:

            async def called_product() -> bool:
                return await _product_calls_started(order) > before

            await _until(called_product, "the order instance called product")
            yield order, call
        except BaseException:
            call.cancel()
            raise


async def test_sigterm_lets_a_call_in_flight_finish_within_the_grace_period(
    stoppable: MeshHarness,
) -> None:
    async with _order_stuck_on_product(stoppable, "order-finishing") as (order, call):

        async def drained() -> bool:
            return "calls in flight have" in order.log_tail()

        order.send_signal(signal.SIGTERM)
        await _until(drained, "the order instance drained")  # its grace period has begun
        assert not call.done(), "the call ended before the product went on"
        resumed = time.monotonic()  # leaving the block sends SIGCONT
    reply = await asyncio.wait_for(call, GRACE)
    exit_code = await asyncio.wait_for(order.wait(), GRACE)
    assert reply.order.order_id
    assert exit_code == 0
    # It stopped once its last call was done, well before its grace period was over.
    assert time.monotonic() - resumed < GRACE / 2


async def test_sigterm_ends_a_call_that_outlives_the_grace_period(
    stoppable: MeshHarness,
) -> None:
    drain = stoppable.config.server.drain_delay
    async with _order_stuck_on_product(stoppable, "order-outlived") as (order, call):
        signalled = time.monotonic()
        order.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(order.wait(), drain + GRACE + 10)
        took = time.monotonic() - signalled
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(call, 5)
    assert exit_code == 0
    assert took >= drain + GRACE  # the call had the whole grace period
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE, ended.value


async def test_a_new_connection_waits_for_a_slow_handshake(stoppable: MeshHarness) -> None:
    """A busy instance may take a while to answer a TLS handshake: the connection
    waits for it rather than failing the call."""
    channel = stoppable.client().channel("product")
    await channel.wait_for_endpoints(10)  # the call's first step is its connection
    stub = product_pb2_grpc.ProductServiceStub(channel)
    async with _paused(stoppable.instances["product-1"]):
        call = asyncio.ensure_future(
            stub.GetProduct(product_pb2.GetProductRequest(product_id="sku-mug"), timeout=10)
        )
        # The stimulus, not a wait for readiness: the handshake stalls this long.
        await asyncio.sleep(1.0)
        assert not call.done(), call.exception()
    reply = await asyncio.wait_for(call, 5)
    assert reply.product.product_id == "sku-mug"


async def test_a_hung_instance_is_given_up_on_in_time_to_call_another(
    stoppable: MeshHarness,
) -> None:
    """Calls that pick an instance which accepts connections but never answers (here:
    stopped) wait client.connect_timeout for its handshake, then go to the other
    instance, within their deadline."""
    connect_timeout = stoppable.config.client.connect_timeout
    hung = await stoppable.start_one("product", "product-hung")
    try:
        channel = stoppable.client().channel("product")
        await channel.wait_for_endpoints(10)
        assert len(channel.endpoints()) == 2
        stub = product_pb2_grpc.ProductServiceStub(channel)
        request = product_pb2.GetProductRequest(product_id="sku-mug")
        async with _paused(hung):
            started = time.monotonic()
            # Round-robin: two of the four calls pick the hung instance first.
            replies = await asyncio.gather(*(stub.GetProduct(request, timeout=5) for _ in range(4)))
            took = time.monotonic() - started
    finally:
        await hung.stop()
    assert [reply.product.product_id for reply in replies] == ["sku-mug"] * 4
    assert connect_timeout <= took < connect_timeout + 2


async def test_an_idempotent_call_leaves_a_hung_instance_after_its_per_try_timeout(
    stoppable: MeshHarness,
) -> None:
    """Connected already, so no handshake is waited for: the attempt itself hangs. An
    idempotent call gives it client.retry.per_try_timeout and goes elsewhere; one that
    is not idempotent (it may have been applied) waits for its whole deadline."""
    per_try = 0.3
    hung = await stoppable.start_one("inventory", "inventory-hung")
    try:
        client = stoppable.client(retry=RetryPolicy(max_attempts=3, per_try_timeout=per_try))
        channel = client.channel("inventory")
        await _until(_sees(channel, 2), "the client saw both inventory instances")
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        get = inventory_pb2.GetStockRequest(product_id="sku-mug")
        await asyncio.gather(*(stub.GetStock(get, timeout=5) for _ in range(4)))  # connected
        async with _paused(hung):
            started = time.monotonic()
            # Round-robin: two of the four calls pick the hung instance first.
            replies = await asyncio.gather(*(stub.GetStock(get, timeout=5) for _ in range(4)))
            took = time.monotonic() - started
            adjust = inventory_pb2.AdjustStockRequest(product_id="sku-mug", delta=1, reason="t")
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(stub.AdjustStock(adjust, timeout=1.5) for _ in range(2)), return_exceptions=True
            )
            waited = time.monotonic() - started
    finally:
        await hung.stop()
    assert [reply.stock.product_id for reply in replies] == ["sku-mug"] * 4
    assert per_try <= took < per_try + 1.0  # not the 5 s deadline
    [stuck] = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert stuck.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited >= 1.4


def _sees(channel: ServiceChannel, count: int) -> Callable[[], Awaitable[bool]]:
    async def enough() -> bool:
        return len(channel.endpoints()) == count

    return enough
