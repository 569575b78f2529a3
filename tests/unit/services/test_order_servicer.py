"""OrderServicer with fake downstream clients and a tmp_path store (the saga itself:
test_order_saga.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.rpc import error_details_pb2
from google.type import money_pb2
from shop.order.v1 import order_pb2 as pb
from shop.shipping.v1 import shipping_pb2

from mesh import inbound
from mesh.problems import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Unauthenticated,
    Unavailable,
)
from mesh.server import Caller
from services.order.clients import Catalog, Inventory, Payments, Shipping
from services.order.domain import ORDER, Address, Line, Money
from services.order.saga import OrderCancelled, OrderPending, OrderSaga
from services.order.servicer import OrderServicer
from services.order.store import OrderStore

PRICES = {
    "dime": Money("EUR", 0, 100_000_000),
    "latte": Money("EUR", 19, 990_000_000),
    "bagel": Money("EUR", 2, 0),
}
NOW = 1_700_000_000_500_000_000
SHORT = [PreconditionViolation("STOCK", "latte", "requested 9, available 2")]


class FakeCatalog:
    """Prices from a dict; records the ids of each call."""

    def __init__(self, prices: dict[str, Money]) -> None:
        self.prices = prices
        self.calls: list[list[str]] = []
        self.hold_until = 0  # if set, no call answers before this many calls arrived
        self._all_arrived = asyncio.Event()

    async def unit_prices(self, product_ids: Sequence[str]) -> list[Money | None]:
        self.calls.append(list(product_ids))
        await asyncio.sleep(0)
        if self.hold_until:
            if len(self.calls) >= self.hold_until:
                self._all_arrived.set()
            await self._all_arrived.wait()
        return [self.prices.get(product_id) for product_id in product_ids]


class FakeInventory:
    """Records reservations and releases; raises `refuse` from reserve, and
    `release_fails` from release, if set. While `gate` is set and not open, reserve
    waits for it."""

    def __init__(self) -> None:
        self.reserved: list[tuple[str, list[Line]]] = []
        self.released: list[str] = []
        self.refuse: Exception | None = None
        self.release_fails: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()  # set once a reserve waits at the gate

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        if self.refuse is not None:
            raise self.refuse
        self.reserved.append((order_id, list(lines)))

    async def release(self, order_id: str) -> None:
        if self.release_fails is not None:
            raise self.release_fails
        self.released.append(order_id)


class FakePayments:
    """Charges by key (a repeated key answers as the first time); records every call.
    `decline` or `fail` is raised by charge when set."""

    def __init__(self) -> None:
        self.charges: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.refunds: list[tuple[str, str]] = []
        self.decline: Exception | None = None
        self.fail: Exception | None = None

    async def charge(self, order_id: str, customer_id: str, amount: Money, key: str) -> str:
        self.calls.append((order_id, key))
        if self.fail is not None:
            raise self.fail
        if self.decline is not None:
            raise self.decline
        return self.charges.setdefault(key, f"pay-{len(self.charges) + 1}")

    async def refund(self, payment_id: str, key: str) -> None:
        self.refunds.append((payment_id, key))


class FakeShipping:
    """Shipments by key; records every call. `refuse` or `fail` is raised by create when
    set."""

    def __init__(self) -> None:
        self.shipments: dict[str, str] = {}
        self.calls: list[tuple[str, Address, str]] = []
        self.cancelled: list[str] = []
        self.refuse: Exception | None = None
        self.fail: Exception | None = None

    async def create(self, order_id: str, address: Address, lines: Sequence[Line], key: str) -> str:
        self.calls.append((order_id, address, key))
        if self.fail is not None:
            raise self.fail
        if self.refuse is not None:
            raise self.refuse
        return self.shipments.setdefault(key, f"shp-{len(self.shipments) + 1}")

    async def cancel(self, shipment_id: str) -> None:
        self.cancelled.append(shipment_id)


class Deadline:
    """An inbound call's deadline, at `until` on the monotonic clock."""

    def __init__(self, until: float) -> None:
        self.until = until

    def time_remaining(self) -> float:
        return self.until - time.monotonic()


# mypy checks that the fakes fit the protocols the servicer depends on.
_catalog: Catalog = FakeCatalog({})
_inventory: Inventory = FakeInventory()
_payments: Payments = FakePayments()
_shipping: Shipping = FakeShipping()


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog(PRICES)


@pytest.fixture
def inventory() -> FakeInventory:
    return FakeInventory()


@pytest.fixture
def payments() -> FakePayments:
    return FakePayments()


@pytest.fixture
def shipping() -> FakeShipping:
    return FakeShipping()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OrderStore]:
    store = OrderStore(tmp_path / "order.db")
    yield store
    store.close()


@pytest.fixture
def saga(
    store: OrderStore, inventory: FakeInventory, payments: FakePayments, shipping: FakeShipping
) -> OrderSaga:
    return OrderSaga(store, inventory, payments, shipping, clock=lambda: NOW)


@pytest.fixture
def servicer(store: OrderStore, catalog: FakeCatalog, saga: OrderSaga) -> OrderServicer:
    ids = (f"ord-{n:016x}" for n in itertools.count(1))
    return OrderServicer(
        store,
        catalog,
        saga,
        clock=lambda: NOW,
        new_order_id=ids.__next__,
    )


def place_request(
    *lines: tuple[str, int], request_id: str = "", customer: str = "cust-1"
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
        customer_id=customer,
        items=[pb.OrderItem(product_id=p, quantity=q) for p, q in lines],
        request_id=request_id,
    )


async def test_order_is_priced_reserved_charged_shipped_and_stored(
    servicer: OrderServicer,
    inventory: FakeInventory,
    payments: FakePayments,
    shipping: FakeShipping,
    context: Any,
) -> None:
    placed = (await servicer.PlaceOrder(place_request(("dime", 3), ("latte", 1)), context)).order
    assert placed.order_id == "ord-0000000000000001"
    assert placed.status == pb.ORDER_STATUS_CONFIRMED
    assert placed.total == money_pb2.Money(currency_code="EUR", units=20, nanos=290_000_000)
    assert [
        (i.product_id, i.quantity, i.unit_price.units, i.unit_price.nanos) for i in placed.items
    ] == [
        ("dime", 3, 0, 100_000_000),
        ("latte", 1, 19, 990_000_000),
    ]
    assert placed.create_time.seconds == 1_700_000_000
    assert placed.create_time.nanos == 500_000_000
    assert inventory.reserved == [(placed.order_id, [Line("dime", 3), Line("latte", 1)])]
    assert payments.calls == [(placed.order_id, f"{placed.order_id}.charge")]
    [(_, address, key)] = shipping.calls
    assert (address.country, key) == ("BE", f"{placed.order_id}.ship")  # the demo address
    assert (placed.payment_id, placed.shipment_id) == ("pay-1", "shp-1")
    assert [(step.name, step.status, step.attempts) for step in placed.saga] == [
        ("reserve_stock", pb.SAGA_STEP_STATUS_DONE, 1),
        ("charge_payment", pb.SAGA_STEP_STATUS_DONE, 1),
        ("create_shipment", pb.SAGA_STEP_STATUS_DONE, 1),
    ]
    assert placed.shipping_address.city == "Brussels"
    got = await servicer.GetOrder(pb.GetOrderRequest(order_id=placed.order_id), context)
    assert got.order == placed


async def test_a_shipping_address_is_checked_then_used(
    servicer: OrderServicer, catalog: FakeCatalog, shipping: FakeShipping, context: Any
) -> None:
    request = place_request(("dime", 1))
    request.shipping_address.CopyFrom(
        shipping_pb2.Address(
            name="Ada", street="", city="London\nEast", postal_code="!", country="uk"
        )
    )
    with pytest.raises(InvalidArgument) as error:
        await servicer.PlaceOrder(request, context)
    assert [v.field for v in error.value.violations] == [
        "shipping_address.street",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
    ]
    assert catalog.calls == []
    request.shipping_address.street, request.shipping_address.city = "1 Lane", "London"
    request.shipping_address.postal_code, request.shipping_address.country = "N1 9GU", "GB"
    placed = (await servicer.PlaceOrder(request, context)).order
    assert shipping.calls[0][1] == Address("Ada", "1 Lane", "London", "N1 9GU", "GB")
    assert placed.shipping_address == request.shipping_address


async def test_every_item_is_priced_in_one_call(
    servicer: OrderServicer, catalog: FakeCatalog, context: Any
) -> None:
    await servicer.PlaceOrder(place_request(("dime", 1), ("latte", 1), ("bagel", 1)), context)
    assert catalog.calls == [["dime", "latte", "bagel"]]


async def test_too_many_items_call_nobody(
    servicer: OrderServicer, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    lines = [(f"p{index}", 1) for index in range(5_000)]
    with pytest.raises(InvalidArgument) as error:
        await servicer.PlaceOrder(place_request(*lines), context)
    assert [v.field for v in error.value.violations] == ["items"]
    assert (catalog.calls, inventory.reserved) == ([], [])


async def test_unknown_product_is_a_field_violation(
    servicer: OrderServicer, inventory: FakeInventory, context: Any
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.PlaceOrder(place_request(("dime", 1), ("ghost", 1)), context)
    assert [v.field for v in error.value.violations] == ["items[1].product_id"]
    assert inventory.reserved == []


async def test_invalid_request_calls_nobody(
    servicer: OrderServicer, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.PlaceOrder(place_request(("dime", 0), ("dime", 1), customer=""), context)
    assert {v.field for v in error.value.violations} == {
        "customer_id",
        "items[0].quantity",
        "items[1].product_id",
    }
    assert catalog.calls == []
    assert inventory.reserved == []


async def test_shortage_carries_the_inventory_violations(
    servicer: OrderServicer, inventory: FakeInventory, context: Any
) -> None:
    inventory.refuse = FailedPrecondition("not enough stock", SHORT)
    with pytest.raises(FailedPrecondition) as error:
        await servicer.PlaceOrder(place_request(("latte", 9)), context)
    assert list(error.value.violations) == SHORT
    assert isinstance(error.value, OrderCancelled)
    [info] = [d for d in error.value.details() if d.Is(error_details_pb2.ResourceInfo.DESCRIPTOR)]
    found = error_details_pb2.ResourceInfo()
    info.Unpack(found)
    assert (found.resource_type, found.resource_name) == (ORDER, "ord-0000000000000001")
    got = await servicer.GetOrder(pb.GetOrderRequest(order_id="ord-0000000000000001"), context)
    assert got.order.status == pb.ORDER_STATUS_CANCELLED
    assert [(step.name, step.status) for step in got.order.saga] == [
        ("reserve_stock", pb.SAGA_STEP_STATUS_FAILED),
        ("charge_payment", pb.SAGA_STEP_STATUS_PENDING),
        ("create_shipment", pb.SAGA_STEP_STATUS_PENDING),
    ]
    assert got.order.failure_reason.startswith("reserve_stock: not enough stock")
    assert inventory.released == []


async def test_a_step_of_unknown_outcome_leaves_the_order_pending_for_the_resumer(
    servicer: OrderServicer, store: OrderStore, payments: FakePayments, context: Any
) -> None:
    payments.fail = Unavailable("payment is down")
    with pytest.raises(OrderPending) as error:
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    assert error.value.code.name == "UNAVAILABLE"
    assert error.value.metadata["order_id"] == "ord-0000000000000001"
    order = store.get("ord-0000000000000001")
    assert order is not None
    assert order.status.name == "PENDING"
    assert [(step.name, step.status.name, step.attempts) for step in order.saga] == [
        ("reserve_stock", "DONE", 1),
        ("charge_payment", "PENDING", 1),
        ("create_shipment", "PENDING", 0),
    ]


async def test_a_repeated_request_returns_the_first_order_without_calls(
    servicer: OrderServicer, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    first = await servicer.PlaceOrder(
        place_request(("dime", 1), ("bagel", 2), request_id="r-1"), context
    )
    calls = (list(catalog.calls), list(inventory.reserved))
    again = await servicer.PlaceOrder(
        place_request(("bagel", 2), ("dime", 1), request_id="r-1"), context
    )
    assert again.order == first.order
    assert (catalog.calls, inventory.reserved) == calls


async def test_a_reused_request_id_with_other_items_is_refused(
    servicer: OrderServicer, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    await servicer.PlaceOrder(place_request(("dime", 1), request_id="r-1"), context)
    calls = (list(catalog.calls), list(inventory.reserved))
    with pytest.raises(InvalidArgument) as error:
        await servicer.PlaceOrder(place_request(("bagel", 5), request_id="r-1"), context)
    assert [v.field for v in error.value.violations] == ["request_id"]
    assert (catalog.calls, inventory.reserved) == calls
    other = await servicer.PlaceOrder(  # the key is the customer's own
        place_request(("bagel", 5), request_id="r-1", customer="cust-2"), context
    )
    assert other.order.customer_id == "cust-2"


async def test_concurrent_duplicates_place_one_order_and_reserve_once(
    servicer: OrderServicer, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    catalog.hold_until = 2  # both are priced before either claims the key
    request = place_request(("dime", 1), request_id="r-2")
    first, second = await asyncio.gather(
        servicer.PlaceOrder(request, context), servicer.PlaceOrder(request, context)
    )
    assert first.order == second.order
    assert inventory.reserved == [(first.order.order_id, [Line("dime", 1)])]
    assert inventory.released == []
    listed = await servicer.ListOrders(pb.ListOrdersRequest(), context)
    assert [o.order_id for o in listed.orders] == [first.order.order_id]


async def test_retries_while_the_first_is_in_flight_wait_for_its_order(
    servicer: OrderServicer, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    inventory.gate = asyncio.Event()
    request = place_request(("latte", 2), request_id="retried")
    first = asyncio.ensure_future(servicer.PlaceOrder(request, context))
    await inventory.waiting.wait()  # the first has claimed the key and is reserving
    retries = [asyncio.ensure_future(servicer.PlaceOrder(request, context)) for _ in range(20)]
    await asyncio.sleep(0.05)
    assert not any(retry.done() for retry in retries)
    inventory.gate.set()
    answers = await asyncio.gather(first, *retries)
    assert {answer.order.order_id for answer in answers} == {"ord-0000000000000001"}
    assert len(inventory.reserved) == 1
    assert catalog.calls == [["latte"]]  # the retries priced nothing


async def test_a_retry_tries_itself_once_the_first_attempt_failed(
    store: OrderStore, context: Any
) -> None:
    class ShortOnce(FakeInventory):
        """Short of stock for the first reservation, which waits at the gate."""

        async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
            self.refuse = (
                FailedPrecondition("not enough stock", SHORT) if not self.waiting.is_set() else None
            )
            await super().reserve(order_id, lines)

    inventory = ShortOnce()
    inventory.gate = asyncio.Event()
    saga = OrderSaga(store, inventory, FakePayments(), FakeShipping())
    servicer = OrderServicer(store, FakeCatalog(PRICES), saga)
    request = place_request(("latte", 9), request_id="r-3")
    first = asyncio.ensure_future(servicer.PlaceOrder(request, context))
    await inventory.waiting.wait()
    retry = asyncio.ensure_future(servicer.PlaceOrder(request, context))
    await asyncio.sleep(0.02)
    assert not retry.done()  # it waits for the first attempt's outcome
    inventory.gate.set()
    with pytest.raises(FailedPrecondition):
        await first
    placed = await retry  # stock arrived meanwhile: its own attempt succeeds
    assert inventory.reserved == [(placed.order.order_id, [Line("latte", 9)])]


async def test_a_retry_gives_up_with_aborted_at_its_deadline(
    servicer: OrderServicer, inventory: FakeInventory, context: Any
) -> None:
    inventory.gate = asyncio.Event()
    request = place_request(("dime", 1), request_id="slow")
    first = asyncio.ensure_future(servicer.PlaceOrder(request, context))
    await inventory.waiting.wait()

    async def retry_with_a_deadline() -> None:
        inbound.enter(Deadline(time.monotonic() + 0.1))
        await servicer.PlaceOrder(request, context)

    started = time.monotonic()
    with pytest.raises(Aborted):
        await retry_with_a_deadline()
    assert time.monotonic() - started < 0.5
    inventory.gate.set()
    await first


async def test_unknown_order_is_not_found(servicer: OrderServicer, context: Any) -> None:
    with pytest.raises(NotFound) as error:
        await servicer.GetOrder(pb.GetOrderRequest(order_id="ord-none"), context)
    assert (error.value.resource_type, error.value.name) == (ORDER, "ord-none")


async def test_list_pages_newest_first_per_customer(servicer: OrderServicer, context: Any) -> None:
    placed = []
    for index in range(5):
        customer = "alice" if index % 2 == 0 else "bob"
        response = await servicer.PlaceOrder(place_request(("dime", 1), customer=customer), context)
        placed.append(response.order.order_id)
    seen, token = [], ""
    while True:
        page = await servicer.ListOrders(
            pb.ListOrdersRequest(customer_id="alice", page_size=2, page_token=token), context
        )
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [placed[4], placed[2], placed[0]]


async def test_list_rejects_a_garbage_token(servicer: OrderServicer, context: Any) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.ListOrders(pb.ListOrdersRequest(page_token="???"), context)
    assert [v.field for v in error.value.violations] == ["page_token"]


# -- end users: calls through the edge act for the user its token names ---------------


def edge_servicer(
    store: OrderStore, catalog: FakeCatalog, inventory: FakeInventory, user: str | None
) -> OrderServicer:
    ids = (f"ord-{n:016x}" for n in itertools.count(100))
    return OrderServicer(
        store,
        catalog,
        OrderSaga(store, inventory, FakePayments(), FakeShipping()),
        caller_of=lambda _: Caller(identity="edge", user=user),
        new_order_id=ids.__next__,
    )


async def test_an_edge_users_order_is_theirs_whatever_the_body_says(
    store: OrderStore, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    alice = edge_servicer(store, catalog, inventory, "alice")
    placed = (await alice.PlaceOrder(place_request(("dime", 1), customer="bob"), context)).order
    assert placed.customer_id == "alice"
    assert store.get(placed.order_id).customer_id == "alice"  # type: ignore[union-attr]


async def test_another_users_order_is_not_found_and_not_listed(
    servicer: OrderServicer,
    store: OrderStore,
    catalog: FakeCatalog,
    inventory: FakeInventory,
    context: Any,
) -> None:
    bobs = (await servicer.PlaceOrder(place_request(("dime", 1), customer="bob"), context)).order
    alice = edge_servicer(store, catalog, inventory, "alice")
    with pytest.raises(NotFound):
        await alice.GetOrder(pb.GetOrderRequest(order_id=bobs.order_id), context)
    listed = await alice.ListOrders(pb.ListOrdersRequest(customer_id="bob"), context)
    assert list(listed.orders) == []
    bob = edge_servicer(store, catalog, inventory, "bob")
    got = await bob.GetOrder(pb.GetOrderRequest(order_id=bobs.order_id), context)
    assert got.order.order_id == bobs.order_id


async def test_the_edge_without_a_user_is_unauthenticated_and_changes_nothing(
    store: OrderStore, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    anonymous = edge_servicer(store, catalog, inventory, None)
    for call, request in [
        (anonymous.PlaceOrder, place_request(("dime", 1))),
        (anonymous.GetOrder, pb.GetOrderRequest(order_id="ord-1")),
        (anonymous.ListOrders, pb.ListOrdersRequest()),
    ]:
        with pytest.raises(Unauthenticated):
            await call(request, context)  # type: ignore[operator]
    assert inventory.reserved == []
    assert store.page(customer_id="", before=None, limit=10)[0] == []


async def test_watch_sends_a_final_order_once_and_ends(
    servicer: OrderServicer, context: Any
) -> None:
    placed = (await servicer.PlaceOrder(place_request(("dime", 1)), context)).order
    stream = servicer.WatchOrder(pb.WatchOrderRequest(order_id=placed.order_id), context)
    assert [response.order async for response in stream] == [placed]


async def test_watch_sends_a_pending_order_then_waits_for_changes(
    servicer: OrderServicer, payments: FakePayments, context: Any
) -> None:
    payments.fail = Unavailable("payment is down")
    with pytest.raises(OrderPending):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    stream = servicer.WatchOrder(pb.WatchOrderRequest(order_id="ord-0000000000000001"), context)
    first = await anext(stream)
    assert first.order.status == pb.ORDER_STATUS_PENDING
    with pytest.raises(TimeoutError):  # unchanged: nothing more is sent
        await asyncio.wait_for(anext(stream), timeout=0.7)


async def test_watching_an_unknown_or_another_users_order_is_not_found(
    servicer: OrderServicer,
    store: OrderStore,
    catalog: FakeCatalog,
    inventory: FakeInventory,
    context: Any,
) -> None:
    with pytest.raises(NotFound):
        await anext(servicer.WatchOrder(pb.WatchOrderRequest(order_id="ord-none"), context))
    bobs = (await servicer.PlaceOrder(place_request(("dime", 1), customer="bob"), context)).order
    alice = edge_servicer(store, catalog, inventory, "alice")
    with pytest.raises(NotFound):
        await anext(alice.WatchOrder(pb.WatchOrderRequest(order_id=bobs.order_id), context))
