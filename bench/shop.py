"""The driver's shop part: PlaceOrder end to end against a bare unary call in the same
mesh, and the outbox relay's latency from commit to consumer.

The mesh, of its own in a temp folder: an etcd, a NATS JetStream broker
(mesh.supervisor.NatsServer), the mesh's certificates, and one real instance each of
product, inventory, order, payment and shipping (`python -m services.<name>` through
mesh.supervisor.InstanceProcess, as `meshctl up` starts them) on the direct data
plane, with mesh.yaml's `events` naming that broker. Payment declines nothing,
shipping refuses nothing, and its carrier steps a day apart (no tracker wakes up).
The benchmark's product is created as admin, and inventory's stock of it topped up by
AdjustStock (retried while inventory answers NOT_FOUND: it accepts stock only for a
product it has learnt from product's events).

The load (bench.load.LoadPool: separate processes, mTLS as admin): GetProduct on
product, the bare unary call, and PlaceOrder on order, one unit of the product for
customer "bench" with a shipping address and no request_id (every call a new order,
whose saga reserves the stock, charges and ships), interleaved in rounds with the
run's rounds, warm-up and window, the same load processes and calls in flight for
both (SHOP_CONCURRENCY per process: why that many, see there).

The relay's latency (bench.relay_consumer, a process of its own subscribed to topic
"order" with mesh.events.NatsEventBus): now - occurred_at of each event its handler
gets, (a) for the events that occurred in PlaceOrder's measured windows, (b) at idle,
IDLE_ORDERS orders placed one at a time, and (c) the relay alone, without the saga
(bench.relay_writer: events committed to an outbox at RELAY_RATE and relayed as a
service does). occurred_at is set when a service builds the event, just before the
transaction that records it commits (OrderPlaced's is the order's create time, set
just before the write that records the order). Before (b) and (c) the consumer has
caught up, so each starts idle.

Where it runs: every mesh process, the broker and the relay writer on the server
core; the driver, the load processes, the consumer and etcd on the load core.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import placement as pinning
from bench.aio import to_completion
from bench.load import LoadFailed, LoadPool, Target
from bench.placement import Placement, cpu_list
from bench.relay_consumer import RelayConsumer
from bench.relay_writer import RelayWriter
from bench.results import SubjectResult
from bench.shop_results import (
    BROKER,
    CONSUMER,
    Interval,
    ShopSubject,
    idle_orders,
    relay_alone,
    relay_phase,
    shop_summary,
)
from bench.summary import (
    IdleOrdersJson,
    RelayPhaseJson,
    ShopJson,
    ShopSettingsJson,
    ThreadPlacement,
)

if TYPE_CHECKING:
    import grpc

    from bench.report import Progress
    from bench.shopmesh import MeshEnvironment
    from mesh.config import MeshConfig
    from mesh.supervisor import InstanceProcess, NatsServer

__all__ = [
    "CUSTOMER_ID",
    "GET_PRODUCT",
    "IDLE_ORDERS",
    "LABELS",
    "PLACE_ORDER",
    "QUICK_IDLE_ORDERS",
    "RELAY_RATE",
    "SERVICES",
    "SHIPPING_STEP_SECONDS",
    "SHOP_CONCURRENCY",
    "SHOP_SETUP",
    "place_order_request",
    "run_shop",
    "shop_document",
    "shop_seconds",
]

SERVICES = ("product", "inventory", "order", "payment", "shipping")
LABELS = (*SERVICES, BROKER)  # the mesh's processes, in the report's order
GET_PRODUCT = "/shop.product.v1.ProductService/GetProduct"
PLACE_ORDER = "/shop.order.v1.OrderService/PlaceOrder"
CUSTOMER_ID = "bench"
STOCK = 100_000_000  # units AdjustStock adds: more than any run can order
STOCK_TIMEOUT = 30.0  # seconds inventory may take to learn the product from its events
SHIPPING_STEP_SECONDS = 86_400.0  # a day between a shipment's statuses: no tracker runs
TOPIC = "order"  # order's events: OrderPlaced, OrderConfirmed, OrderCancelled
PROBE_TOPIC = "bench-relay"  # the relay alone's
CONSUMER_NAME = "bench-relay"
SHOP_CONCURRENCY = 4
"""PlaceOrder calls in flight per load process (8 with the default 2 processes), and
GetProduct's alike: the ratio is taken at one concurrency. Not the main rows' 32: an
order costs the five services and the broker some 15-20 ms of CPU on their one core,
so PlaceOrder's throughput is flat from 2 orders in flight on, and more in flight only
lengthens the queue, PlaceOrder's latency and the relay's with it (one run at each of
2, 4, 8 and 16 in flight, other work on the machine meanwhile: 44-58 orders/s at each;
p50 39, 70, 137 and 325 ms; relay p50 4, 10, 22 and 43 ms). 8 is where GetProduct,
a few hundred microseconds a call, keeps the core busy too (at 4 it is still
latency-bound), so the ratio compares what the core does for each, and PlaceOrder
waits behind a few orders only."""
IN_FLIGHT_NOTE = (
    "from about here both keep the server core busy; PlaceOrder's orders/s are flat "
    "from 2 in flight on, and more in flight only lengthens its latency and the relay's"
)
IDLE_ORDERS = 200
QUICK_IDLE_ORDERS = 50
RELAY_RATE = 50.0  # events/s the relay alone commits: modest, one commit every 20 ms
DRAIN_TIMEOUT = 60.0  # seconds for the relay and the consumer to catch up after the load
QUIET = 0.5  # seconds without a new event (and no backlog): caught up
ARRIVAL_TIMEOUT = 30.0  # seconds for a phase's known events to reach the consumer
START_TIMEOUT = 60.0
SHOP_SETUP = 15.0  # seconds: NATS and the instances up, the product, the helpers, stopping
IDLE_ORDER_SECONDS = 0.02  # seconds per order placed one at a time, roughly
WINDOW_COST = 0.2  # seconds per window besides its own: in-flight orders end, CPU is read


def shop_seconds(rounds: int, warmup: float, window: float, orders: int) -> float:
    """Seconds the shop part's measurements take, roughly (SHOP_SETUP aside)."""
    load = 2 * rounds * (warmup + window + WINDOW_COST)
    return load + orders * IDLE_ORDER_SECONDS + _relay_events(window) / RELAY_RATE + 2 * QUIET


def shop_document(nats_endpoint: str) -> Callable[[dict[str, Any]], None]:
    """The edit of the repo's mesh.yaml for the shop part: its broker, one instance of
    each service, and nothing declared to fail."""

    def edit(document: dict[str, Any]) -> None:
        document["events"] = {**document.get("events", {}), "broker": "nats"}
        document["events"]["endpoint"] = nats_endpoint
        for spec in document["services"].values():
            spec.pop("versions", None)
            spec.pop("policy", None)
            spec["replicas"] = 1
        services = document["services"]
        services["payment"]["settings"] = {}  # declines nothing
        services["shipping"]["settings"] = {"step_seconds": SHIPPING_STEP_SECONDS}

    return edit


def place_order_request() -> bytes:
    """PlaceOrder's request as the load sends it: a new order on every call."""
    from shop.order.v1 import order_pb2
    from shop.shipping.v1 import shipping_pb2

    from bench.shopmesh import PRODUCT_ID

    request = order_pb2.PlaceOrderRequest(
        customer_id=CUSTOMER_ID,
        items=[order_pb2.OrderItem(product_id=PRODUCT_ID, quantity=1)],
        shipping_address=shipping_pb2.Address(
            name="Bench Mark", street="1 Load Lane", city="Leuven", postal_code="3000",
            country="BE",
        ),
    )  # fmt: skip
    return request.SerializeToString()


@dataclass(frozen=True)
class _ShopMesh:
    config: MeshConfig
    nats: NatsServer
    instances: dict[str, InstanceProcess]  # by service

    def address(self, service: str) -> str:
        endpoint = self.instances[service].endpoint
        assert endpoint is not None, "not ready"
        return endpoint.address

    @property
    def pids(self) -> dict[str, int]:
        """Every mesh process and the broker, by label."""
        pids = {service: instance.pid for service, instance in self.instances.items()}
        assert self.nats.pid is not None, "not started"
        return {**pids, BROKER: self.nats.pid}


@asynccontextmanager
async def _broker(root: Path, cpus: frozenset[int] | None) -> AsyncIterator[NatsServer]:
    from mesh.supervisor import NatsServer

    server = NatsServer(root / "nats", log_path=root / "logs" / "nats.log")
    try:
        with pinning.launching_on(cpus):
            await server.spawn()
        await server.wait_healthy(START_TIMEOUT)
        yield server
    finally:
        await to_completion(server.stop())


@asynccontextmanager
async def _shop_mesh(
    env: MeshEnvironment, nats: NatsServer, cpus: frozenset[int] | None
) -> AsyncIterator[_ShopMesh]:
    """One instance of each service, started together on `cpus`, registered and
    SERVING; stopped together on exit (before the broker they publish to)."""
    from mesh.identity import ensure_certificates
    from mesh.registry import EtcdClient
    from mesh.supervisor import InstanceProcess

    config = env.custom("shop", services=SERVICES, edit=shop_document(nats.endpoint))
    ensure_certificates(
        config.certs_dir, config.trust_domain, config.namespace, config.all_identities()
    )
    instances = {
        service: InstanceProcess(config, config.service(service), f"{service}-1", env.etcd.endpoint)
        for service in SERVICES
    }
    try:
        with pinning.launching_on(cpus):
            for instance in instances.values():
                await instance.start()
        async with EtcdClient(env.etcd.endpoint) as etcd:
            await asyncio.gather(*(i.wait_ready(etcd, START_TIMEOUT) for i in instances.values()))
        yield _ShopMesh(config, nats, instances)
    finally:
        started = [i.stop() for i in instances.values() if i.started]
        await to_completion(asyncio.gather(*started, return_exceptions=True))


def _admin(env: MeshEnvironment) -> grpc.ChannelCredentials:
    from mesh.config import ADMIN_IDENTITY
    from mesh.identity import IdentityFiles, channel_credentials

    return channel_credentials(IdentityFiles(env.certs_dir, ADMIN_IDENTITY))


def _stub(channel: Any, module: Any, name: str) -> Any:
    # Generated stubs have no .pyi: untyped, their methods return Any.
    return getattr(module, name)(channel)


async def _top_up(env: MeshEnvironment, address: str) -> float:
    """Add STOCK units of the product, as admin, retrying NOT_FOUND (inventory has not
    learnt the product from product's events yet) for up to STOCK_TIMEOUT s; returns
    the seconds that took."""
    import grpc
    from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    from bench.shopmesh import PRODUCT_ID

    request = inventory_pb2.AdjustStockRequest(
        product_id=PRODUCT_ID, delta=STOCK, reason="bench/shop.py: stock for the load"
    )
    started = time.monotonic()
    async with grpc.aio.secure_channel(address, _admin(env)) as channel:
        stub = _stub(channel, inventory_pb2_grpc, "InventoryServiceStub")
        while True:
            try:
                await stub.AdjustStock(request, timeout=10)
                return time.monotonic() - started
            except grpc.aio.AioRpcError as error:
                late = time.monotonic() - started > STOCK_TIMEOUT
                if error.code() is not grpc.StatusCode.NOT_FOUND or late:
                    raise LoadFailed(f"AdjustStock of {PRODUCT_ID}: {error}") from error
            await asyncio.sleep(0.1)  # a poll, bounded above


async def _place_orders(
    env: MeshEnvironment, address: str, count: int
) -> tuple[list[float], list[str]]:
    """`count` PlaceOrder calls one after another, as admin: the latency of each that
    succeeded (s) and what the others failed with."""
    import grpc

    latencies: list[float] = []
    errors: list[str] = []
    request = place_order_request()
    async with grpc.aio.secure_channel(address, _admin(env)) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(PLACE_ORDER)
        await asyncio.wait_for(channel.channel_ready(), 10)
        for _ in range(count):
            started = time.monotonic()
            try:
                await call(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                errors.append(f"{error.code().name}: {error.details()}"[:300])
                continue
            latencies.append(time.monotonic() - started)
    return latencies, errors


async def _caught_up(consumer: RelayConsumer, topic: str) -> bool:
    """Until the broker has nothing for the consumer on `topic` and nothing new has
    come for QUIET s (the relay is done too: it publishes without pause while it has
    events); False if that takes over DRAIN_TIMEOUT s."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    last, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        status = await consumer.status()
        count = status.received[topic]
        if count != last:
            last, quiet_since = count, time.monotonic()
        elif status.backlog[topic] == 0 and time.monotonic() - quiet_since >= QUIET:
            return True
        await asyncio.sleep(0.1)
    return False


async def _arrived(consumer: RelayConsumer, topic: str, since: float, expected: int) -> int:
    """Until the consumer has `expected` events of `topic` that occurred since `since`,
    or ARRIVAL_TIMEOUT s have passed; how many it has."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        count = (await consumer.status(since)).received[topic]
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)


async def _rounds(
    pool: LoadPool,
    subjects: Sequence[ShopSubject],
    pids: dict[str, int],
    others: Sequence[int],
    *,
    rounds: int,
    warmup: float,
    window: float,
    progress: Progress,
) -> list[Interval]:
    """Every round, a window of each subject in order; the measured stretches of
    PlaceOrder's windows (the last subject's), in wall-clock time."""
    from bench.shop_report import shop_round_line, shop_window_line

    measured: list[Interval] = []
    for number in range(1, rounds + 1):
        for index, subject in enumerate(subjects):
            tracked = {label: pid for label, pid in pids.items() if label != subject.server}
            begin = time.time() + 0.02  # as LoadPool.measure schedules it
            result = await pool.measure(
                index,
                warmup=warmup,
                duration=window,
                server_pid=pids[subject.server],
                background_pids=others,
                tracked=tracked,
                tick=progress.ticker(f"round {number}/{rounds}, {subject.result.name}:"),
            )
            subject.result.windows.append(result)
            if index == len(subjects) - 1:
                measured.append(Interval(begin + warmup, begin + warmup + window))
            progress.report(shop_window_line(number, rounds, subject, result))
            for sample in result.error_samples:
                progress.report(f"  ! {sample}")
        progress.report(shop_round_line(number, [s.result for s in subjects]))
    return measured


async def run_shop(
    *,
    rounds: int,
    warmup: float,
    window: float,
    workers: int,
    concurrency: int,
    orders: int,
    where: Placement,
    progress: Progress,
) -> ShopJson:
    """The shop part (see the module's docstring): `concurrency` calls in flight per
    load process, `orders` placed one at a time at idle."""
    from bench import shopmesh

    with tempfile.TemporaryDirectory(prefix="shopmesh-bench-shop-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        async with (
            shopmesh.mesh_environment(root, progress.report) as env,
            AsyncExitStack() as stack,
        ):
            cores = f" on core {cpu_list(where.server_cpus)}" if where.server_cpus else ""
            progress.report(f"shop: starting NATS and {', '.join(SERVICES)}{cores}")
            started = time.monotonic()
            nats = await stack.enter_async_context(_broker(root, where.server_cpus))
            mesh = await stack.enter_async_context(_shop_mesh(env, nats, where.server_cpus))
            progress.report(
                f"  {len(SERVICES)} instances and NATS {nats.endpoint} ready in "
                f"{time.monotonic() - started:.1f}s; "
                + ", ".join(f"{label} pid {pid}" for label, pid in mesh.pids.items())
            )
            get_request = await shopmesh.create_product(env, mesh.address("product"))
            waited = await _top_up(env, mesh.address("inventory"))
            progress.report(
                f"  created {shopmesh.PRODUCT_ID} as admin; AdjustStock +{STOCK:,} accepted "
                f"after {waited:.1f}s"
            )
            consumer = await stack.enter_async_context(
                RelayConsumer(nats.endpoint, CONSUMER_NAME, [TOPIC, PROBE_TOPIC])
            )
            with pinning.launching_on(where.server_cpus):
                writer = await stack.enter_async_context(
                    RelayWriter(nats.endpoint, root / "relay-writer.db", PROBE_TOPIC)
                )
            if where.load_cpus is not None:
                # Threads the driver started while launching on the server core
                # (asyncio's child watchers, the to_thread pool): back with them.
                pinning.pin_threads(os.getpid(), where.load_cpus)
            in_flight = workers * concurrency
            subjects = [
                ShopSubject(
                    SubjectResult(1, "GetProduct (the bare unary call)", "product, mTLS"),
                    GET_PRODUCT,
                    "product",
                    in_flight,
                ),
                ShopSubject(
                    SubjectResult(2, "PlaceOrder (saga: stock, payment, shipment)", "order"),
                    PLACE_ORDER,
                    "order",
                    in_flight,
                ),
            ]
            targets = [
                Target(mesh.address("product"), GET_PRODUCT, get_request, env.certs_dir),
                Target(mesh.address("order"), PLACE_ORDER, place_order_request(), env.certs_dir),
            ]
            pids = {**mesh.pids, CONSUMER: consumer.pid}
            others = [pid for pid in (env.etcd.pid, writer.pid) if pid is not None]
            async with LoadPool(
                targets, workers=workers, concurrency=concurrency, cpus=where.load_cpus
            ) as pool:
                progress.report(
                    f"shop: {workers} load processes x {concurrency} in flight (pids "
                    f"{', '.join(map(str, pool.pids))}); consumer pid {consumer.pid}"
                )
                measured = await _rounds(
                    pool,
                    subjects,
                    pids,
                    others,
                    rounds=rounds,
                    warmup=warmup,
                    window=window,
                    progress=progress,
                )
                placed = _placement_check(where, mesh.pids, writer.pid, consumer.pid, pool.pids)
                placed = _placement_check(where, mesh.pids, writer.pid, consumer.pid, pool.pids)
            idle, phases = await _relay_phases(
                env, mesh, consumer, writer, measured, orders, window, in_flight, progress
            )
    settings: ShopSettingsJson = {
        "rounds": rounds,
        "window_s": window,
        "warmup_s": warmup,
        "workers": workers,
        "concurrency_per_worker": concurrency,
        "in_flight": in_flight,
        "in_flight_note": IN_FLIGHT_NOTE,
        "order_each_round": [s.result.name for s in subjects],
        "placement": _placement_text(where),
        "idle_orders": orders,
        "relay_rate_per_s": RELAY_RATE,
        "relay_events": _relay_events(window),
    }
    return shop_summary(
        subjects[0],
        subjects[1],
        labels=LABELS,
        settings=settings,
        cores=where.cores,
        idle=idle,
        phases=phases,
        placement_check=placed,
    )


def _relay_events(window: float) -> int:
    """Events the relay alone commits: a main window's worth at RELAY_RATE."""
    return max(10, round(RELAY_RATE * window))


async def _relay_phases(
    env: MeshEnvironment,
    mesh: _ShopMesh,
    consumer: RelayConsumer,
    writer: RelayWriter,
    measured: Sequence[Interval],
    orders: int,
    window: float,
    in_flight: int,
    progress: Progress,
) -> tuple[IdleOrdersJson, list[RelayPhaseJson]]:
    """After the load: (b) orders one at a time, (c) the relay alone, each once the
    consumer has caught up; then the three phases' latencies, (a) included."""
    started = time.monotonic()
    caught = await _caught_up(consumer, TOPIC)
    progress.report(
        f"shop: relay and consumer caught up after the load in {time.monotonic() - started:.1f}s"
        if caught
        else f"shop: WARNING: the consumer was still behind after {DRAIN_TIMEOUT:.0f}s"
    )
    since = time.time()
    latencies, errors = await _place_orders(env, mesh.address("order"), orders)
    idle_span = Interval(since, time.time())
    expected = 2 * orders  # OrderPlaced, then OrderConfirmed (or OrderCancelled)
    got = await _arrived(consumer, TOPIC, since, expected)
    progress.report(
        f"shop: {orders} orders one at a time in {idle_span.end - idle_span.start:.1f}s "
        f"({len(errors)} failed); the consumer got {got} of their {expected} events"
    )
    await _caught_up(consumer, TOPIC)
    count = _relay_events(window)
    since = time.time()
    written = await writer.run(RELAY_RATE, count)
    got = await _arrived(consumer, PROBE_TOPIC, since, count)
    progress.report(
        f"shop: the relay alone: {count} events at {RELAY_RATE:g}/s; the consumer got {got}"
    )
    samples = await consumer.samples()
    phases = [
        relay_phase(
            "under load",
            f"events of PlaceOrder's measured windows, {in_flight} orders in flight",
            samples,
            measured,
            topic=TOPIC,
        ),
        relay_phase(
            "idle",
            f"{orders} orders placed one at a time",
            samples,
            [idle_span],
            topic=TOPIC,
            expected=expected,
        ),
        relay_alone(
            f"{count} events committed one per transaction at {RELAY_RATE:g}/s, no saga",
            written,
            samples,
            topic=PROBE_TOPIC,
        ),
    ]
    return idle_orders(latencies, errors), phases


def _placement_check(
    where: Placement,
    mesh_pids: dict[str, int],
    writer: int,
    consumer: int,
    load: Sequence[int],
) -> dict[str, ThreadPlacement]:
    """Every thread of every process of the part, and the cores it may run on, against
    the plan."""
    if where.server_cpus is None or where.load_cpus is None:
        return {}
    planned = [(label, pid, where.server_cpus) for label, pid in mesh_pids.items()]
    planned.append(("relay writer", writer, where.server_cpus))
    planned.append(("relay consumer", consumer, where.load_cpus))
    planned += [(f"load-{i}", pid, where.load_cpus) for i, pid in enumerate(load)]
    planned.append(("driver", os.getpid(), where.load_cpus))
    checked: dict[str, ThreadPlacement] = {}
    for label, pid, cpus in planned:
        threads, stray = pinning.stray_threads(pid, cpus)
        checked[label] = {
            "pid": pid,
            "cpus": cpu_list(cpus),
            "threads": threads,
            "threads_elsewhere": stray,
        }
    return checked


def _placement_text(where: Placement) -> str:
    if where.server_cpus is None or where.load_cpus is None:
        return where.note
    return (
        f"the five instances, NATS and the relay writer on core {cpu_list(where.server_cpus)} "
        f"(the servers'); the driver, load processes, relay consumer and etcd on core "
        f"{cpu_list(where.load_cpus)}"
    )
