"""Order's and payment's events, and the analytics service that counts them, with real
processes on a NATS broker of this module's own (product, inventory, order, payment
declining mallory, shipping refusing Antarctica, user, and two analytics replicas),
called as admin through the mesh client.

An order, a declined order and a registration move their business metrics on
/metrics (both replicas alike, and GetBusinessMetrics too); an event delivered again
counts once; a restarted analytics instance reports the same totals; order's and
payment's events are on the bus in order per stream, one OrderPlaced and one final
event per order; and orders placed while the broker is down are all published and
counted once when it is back (the transactional outbox).

The broker is this module's so that the counts are this module's alone, and so that
the stream's dedupe window can be short: an event published again after it is stored
again, which is how a redelivery to analytics is made here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import events_pb2 as order_events
from shop.order.v1 import order_pb2, order_pb2_grpc
from shop.payment.v1 import events_pb2 as payment_events
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.shipping.v1 import shipping_pb2
from shop.user.v1 import user_pb2, user_pb2_grpc

from mesh.events import BrokerUnavailable, Event, NatsEventBus
from mesh.supervisor import EtcdServer, NatsServer
from tests.harness.mesh import MeshHarness, write_config
from tests.harness.metrics import Sample, scrape_instance, value

PRODUCT = "sku-mug"  # 12.00 USD: two make an order of 24 dollars
REPLICAS = ("analytics-1", "analytics-2")
TOPICS = ("user", "order", "payment")
pytestmark = pytest.mark.timeout(120)  # the first test starts eight processes

SERVICES = {
    "product": 1,
    "inventory": 1,
    "order": 1,
    "payment": 1,
    "shipping": 1,
    "user": 1,
    "analytics": 2,
}


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    etcd: EtcdServer,
    certs_dir: Path,
    broker: NatsServer,
    bus: NatsEventBus,
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("analytics"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas=SERVICES,
        overrides={"events": {"broker": "nats", "endpoint": broker.endpoint}},
    )
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start(SERVICES)
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def orders(mesh: MeshHarness) -> Any:
    stub = order_pb2_grpc.OrderServiceStub(mesh.client().channel("order"))  # type: ignore[no-untyped-call]
    inventory = inventory_pb2_grpc.InventoryServiceStub(mesh.client().channel("inventory"))  # type: ignore[no-untyped-call]

    async def stocked() -> bool:  # inventory may learn the products from their events
        request = inventory_pb2.GetStockRequest(product_id=PRODUCT)
        try:
            return int((await inventory.GetStock(request)).stock.available) >= 20
        except grpc.aio.AioRpcError:
            return False

    await until(stocked, f"inventory has {PRODUCT} in stock", timeout=30)
    return stub


@pytest.fixture(scope="module")
async def payments(mesh: MeshHarness) -> Any:
    return payment_pb2_grpc.PaymentServiceStub(mesh.client().channel("payment"))  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
async def analytics(mesh: MeshHarness) -> Any:
    return analytics_pb2_grpc.AnalyticsServiceStub(mesh.client().channel("analytics"))  # type: ignore[no-untyped-call]


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


def place(customer: str = "alice", country: str = "NL") -> order_pb2.PlaceOrderRequest:
    return order_pb2.PlaceOrderRequest(
        customer_id=customer,
        items=[order_pb2.OrderItem(product_id=PRODUCT, quantity=2)],
        request_id=f"r-{uuid.uuid4().hex[:12]}",
        shipping_address=shipping_pb2.Address(
            name="Grace Hopper", street="1 Navy Way", city="Arlington", postal_code="22201",
            country=country,
        ),
    )  # fmt: skip


async def place_refused(orders: Any, request: order_pb2.PlaceOrderRequest) -> str:
    """Place an order its saga cancels; its id (the ResourceInfo of the refusal)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await orders.PlaceOrder(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(caught.value)
    info = error_details_pb2.ResourceInfo()
    [order_id] = [info.resource_name for packed in status.details if packed.Unpack(info)]
    return str(order_id)


def metrics(mesh: MeshHarness, instance: str = "analytics-1") -> dict[Sample, float]:
    return scrape_instance(mesh.instances[instance])


BUSINESS: dict[str, tuple[str, dict[str, str]]] = {
    "registrations": ("user_registrations_total", {}),
    "payments": ("payment_success_total", {}),
    "abandoned_at_charge": ("cart_abandonment_total", {"step": "charge_payment"}),
    "abandoned_at_shipment": ("cart_abandonment_total", {"step": "create_shipment"}),
    "orders": ("order_value_dollars_count", {}),
    "dollars": ("order_value_dollars_sum", {}),
    "up_to_10": ("order_value_dollars_bucket", {"le": "10.0"}),
    "up_to_25": ("order_value_dollars_bucket", {"le": "25.0"}),
}
"""The business metrics the tests follow, by a short name: (metric, labels)."""


def business(samples: dict[Sample, float]) -> dict[str, float]:
    """The business metrics of a scrape, by their names in BUSINESS."""
    return {short: value(samples, name, **labels) for short, (name, labels) in BUSINESS.items()}


def plus(before: dict[str, float], **changes: float) -> dict[str, float]:
    """`before` (a `business` reading) with `changes` added."""
    return {short: count + changes.get(short, 0) for short, count in before.items()}


async def caught_up(bus: NatsEventBus) -> bool:
    """Whether analytics has handled every event of its topics."""
    for topic in TOPICS:
        if (await bus.backlog(topic, "analytics")).events:
            return False
    return True


async def settled(bus: NatsEventBus, mesh: MeshHarness, expected: dict[str, float]) -> None:
    """Wait until analytics has handled everything and analytics-1 reports `expected`."""

    async def done() -> bool:
        return await caught_up(bus) and business(metrics(mesh)) == expected

    try:
        await until(done, "analytics counted the events", timeout=30)
    except AssertionError:
        raise AssertionError(f"{business(metrics(mesh))} != {expected}\n{mesh.logs()}") from None


async def test_a_successful_order_moves_order_value_and_payment_success(
    mesh: MeshHarness, bus: NatsEventBus, orders: Any, analytics: Any
) -> None:
    await until(lambda: caught_up(bus), "analytics is idle")
    before = business(metrics(mesh))
    order = (await orders.PlaceOrder(place(), timeout=10)).order
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED
    expected = plus(before, payments=1, orders=1, dollars=24, up_to_25=1)
    await settled(bus, mesh, expected)
    assert business(metrics(mesh, "analytics-2")) == expected  # the replicas agree
    reported = (
        await analytics.GetBusinessMetrics(analytics_pb2.GetBusinessMetricsRequest())
    ).metrics
    assert reported.payment_successes == expected["payments"]
    assert reported.order_values.count == expected["orders"]
    assert reported.order_values.sum_dollars == expected["dollars"]
    assert [(b.upper_bound_dollars, b.count) for b in reported.order_values.buckets][:2] == [
        (10.0, expected["up_to_10"]),
        (25.0, expected["up_to_25"]),
    ]


async def test_a_declined_order_moves_cart_abandonment(
    mesh: MeshHarness, bus: NatsEventBus, orders: Any
) -> None:
    await until(lambda: caught_up(bus), "analytics is idle")
    before = business(metrics(mesh))
    await place_refused(orders, place(customer="mallory"))
    # Placed (24 dollars), then cancelled at the charge: no payment succeeded.
    expected = plus(before, abandoned_at_charge=1, orders=1, dollars=24, up_to_25=1)
    await settled(bus, mesh, expected)


async def test_registering_a_user_moves_user_registrations(
    mesh: MeshHarness, bus: NatsEventBus
) -> None:
    users = user_pb2_grpc.UserServiceStub(mesh.client().channel("user"))  # type: ignore[no-untyped-call]
    await until(lambda: caught_up(bus), "analytics is idle")
    before = business(metrics(mesh))
    user_id = f"usr-{uuid.uuid4().hex[:16]}"
    await users.RegisterUser(
        user_pb2.RegisterUserRequest(
            user_id=user_id, username=f"u{user_id[4:12]}", email=f"{user_id}@example.com",
            display_name="Ada",
        ),
        timeout=10,
    )  # fmt: skip
    await settled(bus, mesh, plus(before, registrations=1))


async def test_only_admin_reads_the_business_metrics(mesh: MeshHarness) -> None:
    as_order = analytics_pb2_grpc.AnalyticsServiceStub(mesh.client("order").channel("analytics"))  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await as_order.GetBusinessMetrics(analytics_pb2.GetBusinessMetricsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_event_delivered_again_counts_once(mesh: MeshHarness, bus: NatsEventBus) -> None:
    await until(lambda: caught_up(bus), "analytics is idle")
    before = business(metrics(mesh))
    captured = [e for e in await bus.history("payment") if e.type.endswith("PaymentCaptured")]
    assert captured, "an earlier test placed an order"
    again = captured[0]

    async def stored_twice() -> bool:
        # Past the dedupe window the broker stores it again, and delivers it again.
        await bus.publish("payment", again)
        return [e.id for e in await bus.history("payment")].count(again.id) >= 2

    await until(stored_twice, "the broker stored the event again")
    await until(lambda: caught_up(bus), "analytics handled the copy")
    assert business(metrics(mesh)) == before
    assert business(metrics(mesh, "analytics-2")) == before


async def test_a_restarted_analytics_reports_the_same_totals(
    mesh: MeshHarness, bus: NatsEventBus
) -> None:
    await until(lambda: caught_up(bus), "analytics is idle")
    before = business(metrics(mesh))
    assert before["payments"] >= 1
    for instance in REPLICAS:
        await mesh.instances[instance].stop()
    for instance in REPLICAS:
        await mesh.start_one("analytics", instance)
    for instance in REPLICAS:
        assert business(metrics(mesh, instance)) == before


async def test_events_are_on_the_bus_in_order_per_stream(
    mesh: MeshHarness, bus: NatsEventBus, orders: Any, payments: Any
) -> None:
    confirmed = [(await orders.PlaceOrder(place(), timeout=10)).order for _ in range(2)]
    refused = await place_refused(orders, place(country="AQ"))  # charged, then refunded
    order_ids = [order.order_id for order in confirmed] + [refused]
    [refund] = (
        await payments.ListPayments(payment_pb2.ListPaymentsRequest(order_id=refused))
    ).payments
    payment_ids = [order.payment_id for order in confirmed] + [refund.payment_id]

    async def published() -> bool:
        streams = by_stream(await bus.history("order"), (f"order-{o}" for o in order_ids))
        paid = by_stream(await bus.history("payment"), (f"payment-{p}" for p in payment_ids))
        return (
            all(len(events) == 2 for events in streams.values())
            and sum(map(len, paid.values())) == len(payment_ids) + 1
        )

    await until(published, "every event of the orders is on the bus")
    streams = by_stream(await bus.history("order"), (f"order-{o}" for o in order_ids))
    for order_id in order_ids:
        events = streams[f"order-{order_id}"]
        assert [e.version for e in events] == [1, 2]
        final = "OrderCancelled" if order_id == refused else "OrderConfirmed"
        assert [e.type.rsplit(".", 1)[1] for e in events] == ["OrderPlaced", final]
        placed = order_events.OrderPlaced.FromString(events[0].data)
        assert (placed.order_id, placed.total.units, placed.total.currency_code) == (
            order_id,
            24,
            "USD",
        )
    cancelled = order_events.OrderCancelled.FromString(streams[f"order-{refused}"][1].data)
    assert cancelled.failed_step == "create_shipment"
    paid = by_stream(await bus.history("payment"), (f"payment-{p}" for p in payment_ids))
    for payment_id in payment_ids:
        events = paid[f"payment-{payment_id}"]
        kinds = [e.type.rsplit(".", 1)[1] for e in events]
        refunded = payment_id == refund.payment_id
        assert kinds == (
            ["PaymentCaptured", "PaymentRefunded"] if refunded else ["PaymentCaptured"]
        )
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        captured = payment_events.PaymentCaptured.FromString(events[0].data)
        assert captured.payment_id == payment_id


async def test_declined_charges_are_on_the_bus(
    mesh: MeshHarness, bus: NatsEventBus, orders: Any
) -> None:
    order_id = await place_refused(orders, place(customer="mallory"))

    async def declined() -> bool:
        found = by_stream(await bus.history("payment"), [f"payment-declined-{order_id}"])
        return bool(found[f"payment-declined-{order_id}"])

    await until(declined, "the declined charge is on the bus")
    [event] = by_stream(await bus.history("payment"), [f"payment-declined-{order_id}"])[
        f"payment-declined-{order_id}"
    ]
    message = payment_events.PaymentDeclined.FromString(event.data)
    assert (event.version, message.order_id, message.customer_id) == (1, order_id, "mallory")


@pytest.mark.timeout(180)
async def test_orders_placed_while_the_broker_is_down_are_all_published_and_counted_once(
    mesh: MeshHarness, bus: NatsEventBus, broker: NatsServer, orders: Any
) -> None:
    await until(lambda: caught_up(bus), "analytics is idle")
    before = business(metrics(mesh))
    await broker.stop()
    try:
        confirmed = [(await orders.PlaceOrder(place(), timeout=10)).order for _ in range(3)]
        declined = await place_refused(orders, place(customer="mallory"))
    finally:
        await broker.start()
    order_ids = [order.order_id for order in confirmed] + [declined]
    payment_ids = [order.payment_id for order in confirmed]

    async def published() -> bool:
        try:
            streams = by_stream(await bus.history("order"), (f"order-{o}" for o in order_ids))
            paid = by_stream(await bus.history("payment"), (f"payment-{p}" for p in payment_ids))
        except BrokerUnavailable:  # the test's own connection is not back yet
            return False
        return all(len(e) >= 2 for e in streams.values()) and all(paid.values())

    await until(published, "the outboxes are published", timeout=60)
    expected = plus(before, payments=3, abandoned_at_charge=1, orders=4, dollars=96, up_to_25=4)
    await settled(bus, mesh, expected)
    assert business(metrics(mesh, "analytics-2")) == expected
    streams = by_stream(await bus.history("order"), (f"order-{o}" for o in order_ids))
    for order_id in order_ids:  # each event once, in order
        final = "OrderCancelled" if order_id == declined else "OrderConfirmed"
        assert [(e.version, e.type.rsplit(".", 1)[1]) for e in streams[f"order-{order_id}"]] == [
            (1, "OrderPlaced"),
            (2, final),
        ]
    paid = by_stream(await bus.history("payment"), (f"payment-{p}" for p in payment_ids))
    assert all(len(events) == 1 for events in paid.values())


def by_stream(events: Iterable[Event], streams: Iterable[str]) -> dict[str, list[Event]]:
    """The events of each of `streams`, in the order the broker stored them."""
    wanted: dict[str, list[Event]] = {stream: [] for stream in streams}
    found: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.stream in wanted:
            found[event.stream].append(event)
    return {stream: found[stream] for stream in wanted}
