"""ShippingServicer methods called directly, on a tmp_path store, with a fake clock that
the servicer's sleeps move on (so a whole delivery is tracked in no time)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shop.shipping.v1 import shipping_pb2 as pb

from mesh.problems import FailedPrecondition, InvalidArgument, NotFound
from services.shipping.domain import SHIPMENT, SHIPMENT_REFUSED
from services.shipping.servicer import ShippingServicer
from services.shipping.settings import ShippingSettings
from services.shipping.store import ShippingStore

START_NS = 1_700_000_000 * 10**9
STEP_NS = 5 * 10**9  # the default step_seconds
_IDS = itertools.count(1)  # shared: servicers on one store must not repeat an id

CREATED, PACKED, SHIPPED, DELIVERED, CANCELLED = (
    pb.SHIPMENT_STATUS_CREATED,
    pb.SHIPMENT_STATUS_PACKED,
    pb.SHIPMENT_STATUS_SHIPPED,
    pb.SHIPMENT_STATUS_DELIVERED,
    pb.SHIPMENT_STATUS_CANCELLED,
)


class FakeTime:
    """A clock in nanoseconds that only sleeps move on; records every sleep. `on_sleep`,
    if set, runs at each sleep (another instance acting meanwhile, say)."""

    def __init__(self) -> None:
        self.now = START_NS
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], Awaitable[None]] | None = None

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9)
        if self.on_sleep is not None:
            await self.on_sleep()
        await asyncio.sleep(0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ShippingStore]:
    store = ShippingStore(tmp_path / "shipping.db")
    yield store
    store.close()


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


def make_servicer(
    store: ShippingStore, clock: FakeTime, settings: ShippingSettings | None = None
) -> ShippingServicer:
    return ShippingServicer(
        store,
        settings or ShippingSettings(),
        clock=clock,
        sleep=clock.sleep,
        new_shipment_id=lambda: f"shp-{next(_IDS):04d}",
    )


@pytest.fixture
def servicer(store: ShippingStore, clock: FakeTime) -> ShippingServicer:
    return make_servicer(store, clock)


def address(country: str = "DE") -> pb.Address:
    return pb.Address(
        name="Grace Hopper", street="Unter den Linden 1", city="Berlin", postal_code="10117",
        country=country,
    )  # fmt: skip


def create_request(
    key: str = "ship-1", *, order_id: str = "ord-1", country: str = "DE"
) -> pb.CreateShipmentRequest:
    return pb.CreateShipmentRequest(
        order_id=order_id,
        address=address(country),
        items=[pb.ShipmentItem(product_id="sku-mug", quantity=2)],
        idempotency_key=key,
    )


async def track(servicer: ShippingServicer, shipment_id: str, context: Any) -> list[pb.Shipment]:
    stream = servicer.TrackShipment(pb.TrackShipmentRequest(shipment_id=shipment_id), context)
    return [response.shipment async for response in stream]


async def test_a_new_shipment_is_created(servicer: ShippingServicer, context: Any) -> None:
    shipment = (await servicer.CreateShipment(create_request(), context)).shipment
    assert shipment.shipment_id.startswith("shp-")
    assert (shipment.order_id, shipment.address, shipment.status) == ("ord-1", address(), CREATED)
    assert list(shipment.items) == [pb.ShipmentItem(product_id="sku-mug", quantity=2)]
    assert shipment.create_time.ToNanoseconds() == shipment.update_time.ToNanoseconds() == START_NS


async def test_a_shipment_moves_on_with_the_clock(
    servicer: ShippingServicer, clock: FakeTime, context: Any
) -> None:
    made = (await servicer.CreateShipment(create_request(), context)).shipment
    clock.now += STEP_NS + 1
    got = (
        await servicer.GetShipment(pb.GetShipmentRequest(shipment_id=made.shipment_id), context)
    ).shipment
    assert got.status == PACKED
    assert got.update_time.ToNanoseconds() == START_NS + STEP_NS
    assert got.create_time == made.create_time


async def test_a_retried_creation_returns_the_first_shipment(
    servicer: ShippingServicer, context: Any
) -> None:
    first = (await servicer.CreateShipment(create_request(), context)).shipment
    again = (await servicer.CreateShipment(create_request(), context)).shipment
    assert again == first


async def test_concurrent_creations_with_one_key_make_one_shipment(
    servicer: ShippingServicer, context: Any
) -> None:
    answers = await asyncio.gather(
        *(servicer.CreateShipment(create_request("shared"), context) for _ in range(10))
    )
    assert len({answer.shipment.shipment_id for answer in answers}) == 1


async def test_a_key_reused_for_another_shipment_is_invalid(
    servicer: ShippingServicer, context: Any
) -> None:
    await servicer.CreateShipment(create_request(), context)
    with pytest.raises(InvalidArgument) as error:
        await servicer.CreateShipment(create_request(country="FR"), context)
    assert [v.field for v in error.value.violations] == ["idempotency_key"]


async def test_a_bad_request_lists_every_field_before_any_delay(
    store: ShippingStore, clock: FakeTime, context: Any
) -> None:
    servicer = make_servicer(store, clock, ShippingSettings(delay_ms=300))
    bad = pb.CreateShipmentRequest(
        order_id="Order 1",
        address=pb.Address(name="x", street="", city="Berlin", country="Germany"),
        items=[pb.ShipmentItem(product_id="sku-mug", quantity=0)],
    )
    with pytest.raises(InvalidArgument) as error:
        await servicer.CreateShipment(bad, context)
    assert [v.field for v in error.value.violations] == [
        "order_id",
        "address.street",
        "address.country",
        "items[0].quantity",
        "idempotency_key",
    ]
    with pytest.raises(InvalidArgument) as error:
        await servicer.CreateShipment(pb.CreateShipmentRequest(order_id="ord-1"), context)
    assert [v.field for v in error.value.violations] == ["address", "items", "idempotency_key"]
    assert clock.sleeps == []
    made = (await servicer.CreateShipment(create_request(), context)).shipment
    await servicer.CancelShipment(pb.CancelShipmentRequest(shipment_id=made.shipment_id), context)
    assert clock.sleeps == [0.3, 0.3]


async def test_a_refused_country_is_a_failed_precondition_kept_by_the_key(
    store: ShippingStore, clock: FakeTime, context: Any
) -> None:
    refusing = make_servicer(
        store, clock, ShippingSettings.model_validate({"fail": {"countries": ["AQ"]}})
    )
    with pytest.raises(FailedPrecondition) as error:
        await refusing.CreateShipment(create_request(country="AQ"), context)
    assert [(v.type, v.subject) for v in error.value.violations] == [(SHIPMENT_REFUSED, "AQ")]
    with pytest.raises(FailedPrecondition):
        await make_servicer(store, clock).CreateShipment(create_request(country="AQ"), context)


async def test_a_listed_order_and_a_share_are_refused(
    store: ShippingStore, clock: FakeTime, context: Any
) -> None:
    settings = ShippingSettings.model_validate({"fail": {"order_ids": ["ord-bad"], "share": 1}})
    refusing = make_servicer(store, clock, settings)
    for request in (create_request("a", order_id="ord-bad"), create_request("b")):
        with pytest.raises(FailedPrecondition):
            await refusing.CreateShipment(request, context)


async def test_tracking_streams_every_status_until_delivered(
    servicer: ShippingServicer, clock: FakeTime, context: Any
) -> None:
    made = (await servicer.CreateShipment(create_request(), context)).shipment
    tracked = await track(servicer, made.shipment_id, context)
    assert [shipment.status for shipment in tracked] == [CREATED, PACKED, SHIPPED, DELIVERED]
    assert [shipment.update_time.ToNanoseconds() - START_NS for shipment in tracked] == [
        0,
        STEP_NS,
        2 * STEP_NS,
        3 * STEP_NS,
    ]
    assert max(clock.sleeps) <= 0.5  # it looks at least every TRACK_INTERVAL
    assert clock.now - START_NS < 3 * STEP_NS + 10**9  # and ends once delivered


async def test_tracking_a_final_shipment_sends_it_once(
    servicer: ShippingServicer, clock: FakeTime, context: Any
) -> None:
    made = (await servicer.CreateShipment(create_request(), context)).shipment
    clock.now += 10 * STEP_NS
    assert [s.status for s in await track(servicer, made.shipment_id, context)] == [DELIVERED]


async def test_tracking_sees_a_cancellation_made_meanwhile(
    servicer: ShippingServicer, store: ShippingStore, clock: FakeTime, context: Any
) -> None:
    made = (await servicer.CreateShipment(create_request(), context)).shipment

    async def cancel_elsewhere() -> None:  # another instance, while the tracker sleeps
        if clock.now - START_NS >= STEP_NS:
            store.cancel(made.shipment_id, clock.now)

    clock.on_sleep = cancel_elsewhere
    tracked = await track(servicer, made.shipment_id, context)
    assert [shipment.status for shipment in tracked] == [CREATED, CANCELLED]


async def test_tracking_an_unknown_or_malformed_shipment_fails(
    servicer: ShippingServicer, context: Any
) -> None:
    with pytest.raises(NotFound) as error:
        await track(servicer, "shp-none", context)
    assert (error.value.resource_type, error.value.name) == (SHIPMENT, "shp-none")
    with pytest.raises(InvalidArgument):
        await track(servicer, "SHP 1", context)


async def test_cancel_is_idempotent_until_the_shipment_leaves(
    servicer: ShippingServicer, clock: FakeTime, context: Any
) -> None:
    first = (await servicer.CreateShipment(create_request("one"), context)).shipment
    cancel = pb.CancelShipmentRequest(shipment_id=first.shipment_id)
    cancelled = (await servicer.CancelShipment(cancel, context)).shipment
    assert cancelled.status == CANCELLED
    clock.now += 10 * STEP_NS
    assert (await servicer.CancelShipment(cancel, context)).shipment == cancelled
    second = (await servicer.CreateShipment(create_request("two"), context)).shipment
    clock.now += 2 * STEP_NS
    with pytest.raises(FailedPrecondition):
        await servicer.CancelShipment(
            pb.CancelShipmentRequest(shipment_id=second.shipment_id), context
        )


async def test_unknown_and_malformed_ids(servicer: ShippingServicer, context: Any) -> None:
    with pytest.raises(NotFound):
        await servicer.GetShipment(pb.GetShipmentRequest(shipment_id="shp-none"), context)
    with pytest.raises(NotFound):
        await servicer.CancelShipment(pb.CancelShipmentRequest(shipment_id="shp-none"), context)
    for bad in ("", "s" * 20_000):
        with pytest.raises(InvalidArgument) as error:
            await servicer.GetShipment(pb.GetShipmentRequest(shipment_id=bad), context)
        assert [v.field for v in error.value.violations] == ["shipment_id"]


async def test_the_step_comes_from_the_settings(
    store: ShippingStore, clock: FakeTime, context: Any
) -> None:
    quick = make_servicer(store, clock, ShippingSettings(step_seconds=0.25))
    made = (await quick.CreateShipment(create_request(), context)).shipment
    tracked = await track(quick, made.shipment_id, context)
    assert tracked[-1].update_time.ToNanoseconds() - START_NS == 750_000_000
