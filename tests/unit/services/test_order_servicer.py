"""OrderServicer with fake downstream clients and a tmp_path store."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.type import money_pb2
from shop.order.v1 import order_pb2 as pb

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
from services.order.clients import Catalog, Inventory
from services.order.domain import ORDER, Line, Money, Order
from services.order.servicer import OrderServicer
from services.order.store import OrderStore
from services.order.sweeper import HoldSweeper

PRICES = {
    "dime": Money("EUR", 0, 100_000_000),
    "latte": Money("EUR", 19, 990_000_000),
    "bagel": Money("EUR", 2, 0),
}
SHORT = [PreconditionViolation("STOCK", "latte", "requested 9, available 2")]
LATER = 2**62  # a cutoff after every hold


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


class BrokenStore(OrderStore):
    def add(self, order: Order) -> Order:
        raise sqlite3.OperationalError("disk I/O error")


class Deadline:
    """An inbound call's deadline, at `until` on the monotonic clock."""

    def __init__(self, until: float) -> None:
        self.until = until

    def time_remaining(self) -> float:
        return self.until - time.monotonic()


# mypy checks that the fakes fit the protocols the servicer depends on.
_catalog: Catalog = FakeCatalog({})
_inventory: Inventory = FakeInventory()


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog(PRICES)


@pytest.fixture
def inventory() -> FakeInventory:
    return FakeInventory()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[OrderStore]:
    store = OrderStore(tmp_path / "order.db")
    yield store
    store.close()


@pytest.fixture
def servicer(store: OrderStore, catalog: FakeCatalog, inventory: FakeInventory) -> OrderServicer:
    ids = (f"ord-{n:016x}" for n in itertools.count(1))
    return OrderServicer(
        store,
        catalog,
        inventory,
        clock=lambda: 1_700_000_000_500_000_000,
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


async def test_order_is_priced_reserved_and_stored(
    servicer: OrderServicer, inventory: FakeInventory, context: Any
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
    got = await servicer.GetOrder(pb.GetOrderRequest(order_id=placed.order_id), context)
    assert got.order == placed


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
    listed = await servicer.ListOrders(pb.ListOrdersRequest(), context)
    assert list(listed.orders) == []
    assert inventory.released == []


async def test_store_failure_releases_the_stock(
    tmp_path: Path, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    store = BrokenStore(tmp_path / "broken.db")
    servicer = OrderServicer(store, catalog, inventory)
    try:
        with pytest.raises(sqlite3.OperationalError):
            await servicer.PlaceOrder(place_request(("dime", 1)), context)
    finally:
        store.close()
    [(order_id, _)] = inventory.reserved
    assert inventory.released == [order_id]


async def test_a_store_failure_whose_release_fails_leaves_the_hold_for_the_sweeper(
    tmp_path: Path, catalog: FakeCatalog, inventory: FakeInventory, context: Any
) -> None:
    store = BrokenStore(tmp_path / "broken.db")
    inventory.release_fails = ConnectionError("inventory is down")
    try:
        with pytest.raises(sqlite3.OperationalError):  # the caller sees why it failed
            await OrderServicer(store, catalog, inventory).PlaceOrder(
                place_request(("dime", 1)), context
            )
        [(order_id, _)] = inventory.reserved
        assert store.claim_holds(LATER) == [order_id]
    finally:
        store.close()


async def test_placed_and_refused_orders_leave_no_hold(
    servicer: OrderServicer, store: OrderStore, inventory: FakeInventory, context: Any
) -> None:
    await servicer.PlaceOrder(place_request(("dime", 1)), context)
    inventory.refuse = FailedPrecondition("not enough stock", SHORT)
    with pytest.raises(FailedPrecondition):
        await servicer.PlaceOrder(place_request(("latte", 9)), context)
    assert store.claim_holds(LATER) == []


async def test_a_reservation_of_unknown_outcome_leaves_the_hold(
    servicer: OrderServicer, store: OrderStore, inventory: FakeInventory, context: Any
) -> None:
    inventory.refuse = TimeoutError("no answer: the stock may or may not be held")
    with pytest.raises(TimeoutError):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    assert store.claim_holds(LATER) == ["ord-0000000000000001"]
    assert await servicer.ListOrders(pb.ListOrdersRequest(), context) == pb.ListOrdersResponse()


async def test_an_order_slower_than_the_sweeper_is_not_stored_and_its_stock_released(
    store: OrderStore, context: Any
) -> None:
    """The sweeper claims the hold, releases and drops it while the reservation is
    still on its way; the order must not be stored, and its stock is released after
    the reservation."""

    class SweptDuringReserve(FakeInventory):
        async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
            swept = await HoldSweeper(store, self, grace=0, clock=lambda: LATER).sweep()
            assert swept == [order_id]
            await super().reserve(order_id, lines)

    inventory = SweptDuringReserve()
    servicer = OrderServicer(store, FakeCatalog(PRICES), inventory)
    with pytest.raises(Unavailable):
        await servicer.PlaceOrder(place_request(("dime", 1)), context)
    [(order_id, _)] = inventory.reserved
    assert inventory.released == [order_id, order_id]  # the sweeper's, then ours
    assert await servicer.ListOrders(pb.ListOrdersRequest(), context) == pb.ListOrdersResponse()
    assert store.claim_holds(LATER) == []


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
    servicer = OrderServicer(store, FakeCatalog(PRICES), inventory)
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
        inventory,
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


async def test_watch_sends_the_order_then_waits_for_changes(
    servicer: OrderServicer, context: Any
) -> None:
    placed = (await servicer.PlaceOrder(place_request(("dime", 1)), context)).order
    stream = servicer.WatchOrder(pb.WatchOrderRequest(order_id=placed.order_id), context)
    first = await anext(stream)
    assert first.order == placed
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
