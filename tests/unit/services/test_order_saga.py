"""The order saga (services.order.saga) and its resumer, with fakes for the four
downstream services and a tmp_path store: forward, compensation in reverse, a crash
between two steps, a step that keeps failing, duplicates and leases."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from shop.order.v1 import order_pb2 as pb

from mesh.problems import FailedPrecondition, PreconditionViolation, Unavailable
from services.order.domain import Line, Order, OrderStatus, StepStatus
from services.order.resumer import SagaResumer
from services.order.saga import OrderPending, OrderSaga, SagaPolicy
from services.order.servicer import OrderServicer
from services.order.store import LeaseLost, OrderStore
from tests.unit.services.test_order_servicer import (
    PRICES,
    SHORT,
    FakeCatalog,
    FakeInventory,
    FakePayments,
    FakeShipping,
    place_request,
)

DECLINED = [PreconditionViolation("PAYMENT_DECLINED", "cust-1", "declined")]
REFUSED = [PreconditionViolation("SHIPMENT_REFUSED", "BE", "not shipped there")]
POLICY = SagaPolicy(lease=30, retry_delay=5, max_attempts=3, give_up_after=600)


class Clock:
    """Nanoseconds since the epoch, moved on by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


class Journal:
    """One list of every downstream effect, in the order they happened."""

    def __init__(self) -> None:
        self.inventory = FakeInventory()
        self.payments = FakePayments()
        self.shipping = FakeShipping()

    def undone(self) -> list[str]:
        return (
            [f"cancel {s}" for s in self.shipping.cancelled]
            + [f"refund {p}" for p, _ in self.payments.refunds]
            + [f"release {o}" for o in self.inventory.released]
        )


class Ordered(Journal):
    """Records undo calls in one list, to check their order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        journal = self

        async def cancel(shipment_id: str) -> None:
            journal.log.append("cancel")

        async def refund(payment_id: str, key: str) -> None:
            journal.log.append("refund")
            journal.payments.refunds.append((payment_id, key))

        async def release(order_id: str) -> None:
            journal.log.append("release")
            journal.inventory.released.append(order_id)

        self.shipping.cancel = cancel  # type: ignore[method-assign]
        self.payments.refund = refund  # type: ignore[method-assign]
        self.inventory.release = release  # type: ignore[method-assign]


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


def steps(order: Order) -> list[tuple[str, str]]:
    return [(step.name, step.status.name) for step in order.saga]


def stored(store: OrderStore, order_id: str = "ord-0000000000000001") -> Order:
    order = store.get(order_id)
    assert order is not None
    return order


async def test_every_step_done_confirms_with_one_charge_and_one_shipment(
    servicer: OrderServicer, store: OrderStore, downstream: Ordered, context: Any
) -> None:
    placed = (await servicer.PlaceOrder(place_request(("dime", 2)), context)).order
    assert placed.status == pb.ORDER_STATUS_CONFIRMED
    order = stored(store)
    assert steps(order) == [
        ("reserve_stock", "DONE"),
        ("charge_payment", "DONE"),
        ("create_shipment", "DONE"),
    ]
    assert len(downstream.payments.calls) == len(downstream.shipping.calls) == 1
    assert downstream.undone() == []


async def test_a_declined_payment_releases_the_stock_and_cancels(
    servicer: OrderServicer, store: OrderStore, downstream: Ordered, context: Any
) -> None:
    downstream.payments.decline = FailedPrecondition("the payment was declined", DECLINED)
    with pytest.raises(FailedPrecondition) as error:
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    assert list(error.value.violations) == DECLINED
    order = stored(store)
    assert order.status is OrderStatus.CANCELLED
    assert steps(order) == [
        ("reserve_stock", "COMPENSATED"),
        ("charge_payment", "FAILED"),
        ("create_shipment", "PENDING"),
    ]
    assert order.failure_reason.startswith("charge_payment: the payment was declined")
    assert downstream.log == ["release"]
    assert downstream.shipping.calls == []


async def test_a_refused_shipment_refunds_then_releases(
    servicer: OrderServicer, store: OrderStore, downstream: Ordered, context: Any
) -> None:
    downstream.shipping.refuse = FailedPrecondition("the shipment was refused", REFUSED)
    with pytest.raises(FailedPrecondition) as error:
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    assert list(error.value.violations) == REFUSED
    order = stored(store)
    assert steps(order) == [
        ("reserve_stock", "COMPENSATED"),
        ("charge_payment", "COMPENSATED"),
        ("create_shipment", "FAILED"),
    ]
    assert downstream.log == ["refund", "release"]  # in reverse
    assert downstream.payments.refunds == [("pay-1", "ord-0000000000000001.refund")]


async def test_short_stock_calls_nothing_else(
    servicer: OrderServicer, store: OrderStore, downstream: Ordered, context: Any
) -> None:
    downstream.inventory.refuse = FailedPrecondition("not enough stock", SHORT)
    with pytest.raises(FailedPrecondition) as error:
        await servicer.PlaceOrder(place_request(("latte", 9)), context)
    assert list(error.value.violations) == SHORT
    assert stored(store).status is OrderStatus.CANCELLED
    assert (downstream.payments.calls, downstream.shipping.calls, downstream.log) == ([], [], [])


class Crash(BaseException):
    """The process dies: nothing after it runs (not an Exception, so nothing catches it)."""


async def test_a_saga_crashed_between_charge_and_shipment_resumes_with_one_charge(
    servicer: OrderServicer,
    store: OrderStore,
    saga: OrderSaga,
    downstream: Ordered,
    clock: Clock,
    context: Any,
) -> None:
    original = store.advance

    def crash_after_the_charge(order_id: str, **kwargs: Any) -> Order:
        written = original(order_id, **kwargs)
        if written.step("charge_payment").status is StepStatus.DONE:
            raise Crash
        return written

    store.advance = crash_after_the_charge  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    store.advance = original  # type: ignore[method-assign]
    assert steps(stored(store))[1:] == [("charge_payment", "DONE"), ("create_shipment", "PENDING")]

    resumer = SagaResumer(store, saga, clock=clock)
    assert await resumer.resume() == []  # the dead driver's lease still holds
    clock.advance(POLICY.lease + 1)
    assert await resumer.resume() == ["ord-0000000000000001"]
    order = stored(store)
    assert order.status is OrderStatus.CONFIRMED
    assert len(downstream.payments.calls) == 1
    assert len(downstream.inventory.reserved) == 1
    assert len(downstream.shipping.calls) == 1
    assert await resumer.resume() == []


async def test_a_shipment_that_keeps_failing_is_undone_refunding_and_releasing_once(
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
    resumer = SagaResumer(store, saga, clock=clock)
    for _ in range(10):
        clock.advance(POLICY.retry_delay + 0.1)
        await resumer.resume()
    order = stored(store)
    assert order.status is OrderStatus.CANCELLED
    # Its outcome never became known, so undoing it was given up on too; the rest is undone.
    assert steps(order) == [
        ("reserve_stock", "COMPENSATED"),
        ("charge_payment", "COMPENSATED"),
        ("create_shipment", "COMPENSATION_FAILED"),
    ]
    assert order.step("create_shipment").attempts == POLICY.max_attempts
    assert downstream.log == ["refund", "release"]
    assert len(downstream.payments.calls) == 1


async def test_a_shipment_given_up_on_but_created_after_all_is_cancelled(
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
    resumer = SagaResumer(store, saga, clock=clock)
    for _ in range(POLICY.max_attempts - 2):  # PlaceOrder made the first attempt
        clock.advance(POLICY.retry_delay + 0.1)
        await resumer.resume()
    assert stored(store).step("create_shipment").status is StepStatus.PENDING
    downstream.shipping.fail = None  # back, and its key shows what happened
    clock.advance(POLICY.retry_delay + 0.1)
    await resumer.resume()
    assert stored(store).status is OrderStatus.CONFIRMED  # the last try got through

    # Given up on, then found to have happened: undone like a done step.
    downstream.shipping.fail = Unavailable("shipping is down")
    clock.advance(1)
    with pytest.raises(OrderPending):
        await servicer.PlaceOrder(place_request(("bagel", 1)), context)
    for _ in range(POLICY.max_attempts - 1):
        clock.advance(POLICY.retry_delay + 0.1)
        await resumer.resume()
    assert stored(store, "ord-0000000000000002").step("create_shipment").status is (
        StepStatus.ABANDONED
    )
    downstream.shipping.fail = None
    clock.advance(POLICY.retry_delay + 0.1)
    await resumer.resume()
    order = stored(store, "ord-0000000000000002")
    assert order.status is OrderStatus.CANCELLED
    assert steps(order)[2] == ("create_shipment", "COMPENSATED")
    assert order.shipment_id == "shp-2"
    assert downstream.log == ["cancel", "refund", "release"]


async def test_concurrent_duplicates_run_one_saga(
    servicer: OrderServicer, downstream: Ordered, context: Any
) -> None:
    request = place_request(("dime", 1), request_id="r-1")
    answers = await asyncio.gather(*(servicer.PlaceOrder(request, context) for _ in range(5)))
    assert {answer.order.order_id for answer in answers} == {"ord-0000000000000001"}
    assert len(downstream.inventory.reserved) == 1
    assert len(downstream.payments.calls) == len(downstream.shipping.calls) == 1


async def test_a_lease_keeps_a_second_resumer_off_a_saga(
    tmp_path: Path, store: OrderStore, downstream: Ordered, clock: Clock, context: Any
) -> None:
    """Two replicas (two stores on one file) resume at once: one drives the saga."""
    gate, arrived = asyncio.Event(), asyncio.Event()
    calls = 0
    real_create = downstream.shipping.create

    async def slow_create(order_id: str, address: Any, lines: Sequence[Line], key: str) -> str:
        nonlocal calls
        calls += 1
        arrived.set()
        await gate.wait()
        return await real_create(order_id, address, lines, key)

    other = OrderStore(tmp_path / "order.db")
    try:
        sagas = [
            OrderSaga(s, downstream.inventory, downstream.payments, downstream.shipping,
                      policy=POLICY, clock=clock)
            for s in (store, other)
        ]  # fmt: skip
        servicer = OrderServicer(store, FakeCatalog(PRICES), sagas[0], clock=clock)
        downstream.shipping.fail = Unavailable("shipping is down")
        with pytest.raises(OrderPending):
            await servicer.PlaceOrder(place_request(("dime", 1)), context)
        downstream.shipping.fail = None
        downstream.shipping.create = slow_create  # type: ignore[method-assign]
        clock.advance(POLICY.retry_delay + 0.1)
        first = asyncio.ensure_future(SagaResumer(store, sagas[0], clock=clock).resume())
        await arrived.wait()
        assert await SagaResumer(other, sagas[1], clock=clock).resume() == []
        gate.set()
        [order_id] = await first
        assert stored(store, order_id).status is OrderStatus.CONFIRMED
        assert calls == 1
    finally:
        other.close()


async def test_a_driver_whose_lease_was_taken_writes_nothing(
    servicer: OrderServicer, store: OrderStore, downstream: Ordered, clock: Clock, context: Any
) -> None:
    downstream.payments.fail = Unavailable("payment is down")
    with pytest.raises(OrderPending):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    clock.advance(POLICY.retry_delay + 0.1)
    [order_id] = store.claim_expired(clock(), owner="b", lease_until_ns=clock() + 10**10, limit=5)
    with pytest.raises(LeaseLost):
        store.advance(order_id, owner="a", lease_until_ns=0, status=OrderStatus.CANCELLED)
    assert stored(store, order_id).status is OrderStatus.PENDING
