"""Order's events in its outbox (services.order.events, recorded by the store), with the
saga's fakes and a tmp_path store: OrderPlaced with the PENDING order, one final event
in the transaction that ends the saga, in stream order, and never twice, whoever
drives the saga to its end."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message
from shop.order.v1 import events_pb2

from mesh.problems import FailedPrecondition, Unavailable
from services.order import events
from services.order.domain import (
    DEFAULT_ADDRESS,
    Money,
    Order,
    OrderItem,
    OrderStatus,
    StepStatus,
    new_saga,
)
from services.order.resumer import SagaResumer
from services.order.saga import OrderCancelled, OrderPending, OrderSaga
from services.order.servicer import OrderServicer
from services.order.store import LeaseLost, OrderStore
from tests.unit.services.test_order_saga import DECLINED, POLICY, Clock, Ordered
from tests.unit.services.test_order_servicer import PRICES, FakeCatalog, place_request

ORDER_ID = "ord-0000000000000001"
M = TypeVar("M", bound=Message)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OrderStore]:
    store = OrderStore(tmp_path / "order.db")
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def downstream() -> Ordered:
    return Ordered()


@pytest.fixture
def saga(store: OrderStore, downstream: Ordered, clock: Clock) -> OrderSaga:
    return OrderSaga(
        store,
        downstream.inventory,
        downstream.payments,
        downstream.shipping,
        policy=POLICY,
        clock=clock,
    )


@pytest.fixture
def servicer(store: OrderStore, saga: OrderSaga, clock: Clock) -> OrderServicer:
    ids = (f"ord-{n:016x}" for n in itertools.count(1))
    return OrderServicer(store, FakeCatalog(PRICES), saga, clock=clock, new_order_id=ids.__next__)


def outbox(store: OrderStore) -> list[tuple[str, str, int, str]]:
    """(topic, stream, version, type) of every recorded event, in commit order."""
    rows = store.database.query("SELECT topic, stream, version, type FROM outbox ORDER BY position")
    return [(topic, stream, version, kind) for topic, stream, version, kind in rows]


def payload(store: OrderStore, version: int, message: M) -> M:
    [(data,)] = store.database.query(
        "SELECT data FROM outbox WHERE stream = ? AND version = ?", (f"order-{ORDER_ID}", version)
    )
    message.ParseFromString(data)
    return message


PLACED = ("order", f"order-{ORDER_ID}", 1, "shop.order.v1.OrderPlaced")
CONFIRMED = ("order", f"order-{ORDER_ID}", 2, "shop.order.v1.OrderConfirmed")
CANCELLED = ("order", f"order-{ORDER_ID}", 2, "shop.order.v1.OrderCancelled")


async def test_a_confirmed_order_records_placed_then_confirmed(
    servicer: OrderServicer, store: OrderStore, context: Any
) -> None:
    order = (await servicer.PlaceOrder(place_request(("dime", 3), ("bagel", 1)), context)).order
    assert outbox(store) == [PLACED, CONFIRMED]
    placed = payload(store, 1, events_pb2.OrderPlaced())
    assert (placed.order_id, placed.customer_id) == (ORDER_ID, "cust-1")
    assert [(line.product_id, line.quantity) for line in placed.lines] == [
        ("dime", 3),
        ("bagel", 1),
    ]
    assert (placed.total.currency_code, placed.total.units, placed.total.nanos) == (
        "EUR",
        2,
        300_000_000,
    )
    confirmed = payload(store, 2, events_pb2.OrderConfirmed())
    assert (confirmed.payment_id, confirmed.shipment_id) == (order.payment_id, order.shipment_id)
    assert confirmed.total == placed.total


async def test_a_declined_order_records_cancelled_with_its_failed_step(
    servicer: OrderServicer, store: OrderStore, downstream: Ordered, context: Any
) -> None:
    downstream.payments.decline = FailedPrecondition("declined", DECLINED)
    with pytest.raises(OrderCancelled):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    assert outbox(store) == [PLACED, CANCELLED]
    cancelled = payload(store, 2, events_pb2.OrderCancelled())
    assert cancelled.failed_step == "charge_payment"
    assert cancelled.reason.startswith("charge_payment: ")
    assert cancelled.customer_id == "cust-1"


async def test_a_resumed_saga_records_its_end_once(
    servicer: OrderServicer,
    store: OrderStore,
    saga: OrderSaga,
    downstream: Ordered,
    clock: Clock,
    context: Any,
) -> None:
    downstream.shipping.fail = Unavailable("shipping is down")
    with pytest.raises(OrderPending):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    assert outbox(store) == [PLACED]  # still PENDING: no final event yet
    downstream.shipping.fail = None
    clock.advance(POLICY.retry_delay + 0.1)
    resumer = SagaResumer(store, saga, clock=clock)
    assert await resumer.resume() == [ORDER_ID]
    assert outbox(store) == [PLACED, CONFIRMED]
    # The first driver, back after its lease was taken, and later looks: nothing more.
    with pytest.raises(LeaseLost):
        store.advance(
            ORDER_ID, owner="a-late-driver", lease_until_ns=0, status=OrderStatus.CONFIRMED
        )
    clock.advance(POLICY.lease + 1)
    assert await resumer.resume() == []
    assert outbox(store) == [PLACED, CONFIRMED]


def test_an_order_ended_twice_by_its_owner_records_one_final_event(
    store: OrderStore, clock: Clock
) -> None:
    """A driver that crashed after the commit that ended the saga, and whose retry
    writes the end again (as a resumer could): the second write is refused."""
    order = _pending(clock)
    assert store.begin(order, owner="a", lease_until_ns=clock() + 10**9)
    store.advance(ORDER_ID, owner="a", lease_until_ns=0, status=OrderStatus.CANCELLED)
    with pytest.raises(LeaseLost):
        store.advance(ORDER_ID, owner="a", lease_until_ns=0, status=OrderStatus.CANCELLED)
    assert outbox(store) == [PLACED, CANCELLED]
    assert store.claim_expired(clock() + 10**12, owner="b", lease_until_ns=0, limit=10) == []


def test_a_refused_begin_records_nothing_and_the_relay_is_woken_per_commit(
    store: OrderStore, clock: Clock
) -> None:
    woken: list[int] = []
    store.on_events(lambda: woken.append(1))
    first = _pending(clock, request_id="r-1")
    assert store.begin(first, owner="a", lease_until_ns=0)
    again = _pending(clock, order_id="ord-0000000000000002", request_id="r-1")
    assert not store.begin(again, owner="a", lease_until_ns=0)
    assert outbox(store) == [PLACED]
    assert len(woken) == 1
    store.advance(
        ORDER_ID, owner="a", lease_until_ns=0, step=replace(first.saga[0], status=StepStatus.DONE)
    )
    assert len(woken) == 1  # a transition that does not end the saga records nothing
    store.advance(ORDER_ID, owner="a", lease_until_ns=0, status=OrderStatus.CONFIRMED)
    assert len(woken) == 2


def test_the_failed_step_is_the_last_that_ran() -> None:
    order = _pending(Clock())
    reserve, charge, ship = order.saga
    undone = replace(reserve, status=StepStatus.COMPENSATED)
    assert events.failed_step(replace(order, saga=(undone, charge, ship))) == "reserve_stock"
    failed = replace(charge, status=StepStatus.FAILED)
    assert events.failed_step(replace(order, saga=(undone, failed, ship))) == "charge_payment"
    assert events.failed_step(order) == ""


def _pending(clock: Clock, *, order_id: str = ORDER_ID, request_id: str = "") -> Order:
    return Order(
        order_id=order_id,
        customer_id="cust-1",
        items=(OrderItem("dime", 1, Money("EUR", 0, 100_000_000)),),
        total=Money("EUR", 0, 100_000_000),
        status=OrderStatus.PENDING,
        create_time_ns=clock(),
        request_id=request_id,
        address=DEFAULT_ADDRESS,
        saga=new_saga(clock()),
    )
