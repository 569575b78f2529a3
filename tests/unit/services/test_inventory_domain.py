"""services.inventory.domain: request checks, stock arithmetic, idempotency."""

from __future__ import annotations

import pytest

from mesh.problems import AlreadyExists, FailedPrecondition, InvalidArgument
from services.inventory import domain
from services.inventory.domain import Reservation, ReservationItem, ReservationState, StockLevel


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def test_available_is_on_hand_minus_reserved() -> None:
    assert StockLevel("a", on_hand=5, reserved=2).available == 3
    assert StockLevel("a").available == 0


def test_adjustment_checks_every_field() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_adjustment("Bad Id", 0, "r" * 201)
    assert fields_of(error) == {"product_id", "delta", "reason"}
    domain.validate_adjustment("sku-1", -3, "r" * 200)


def test_adjusted_adds_and_removes() -> None:
    level = StockLevel("sku-1", on_hand=5, reserved=2)
    assert domain.adjusted(level, 4) == StockLevel("sku-1", on_hand=9, reserved=2)
    assert domain.adjusted(level, -3) == StockLevel("sku-1", on_hand=2, reserved=2)


def test_adjusted_below_reserved_is_a_stock_violation() -> None:
    with pytest.raises(FailedPrecondition) as error:
        domain.adjusted(StockLevel("sku-1", on_hand=5, reserved=2), -4)
    assert [(v.type, v.subject) for v in error.value.violations] == [("STOCK", "sku-1")]


def test_adjusted_past_int64_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.adjusted(StockLevel("sku-1", on_hand=domain.MAX_QUANTITY), 1)
    assert fields_of(error) == {"delta"}


def test_reservation_reports_every_bad_field() -> None:
    items = [
        ReservationItem("sku-1", 0),
        ReservationItem("sku-2", 1),
        ReservationItem("sku-1", 2),
        ReservationItem("", 1),
        ReservationItem("Nope", -1),
    ]
    with pytest.raises(InvalidArgument) as error:
        domain.validate_reservation("", items)
    assert fields_of(error) == {
        "order_id",
        "items[0].quantity",
        "items[2].product_id",
        "items[3].product_id",
        "items[4].product_id",
        "items[4].quantity",
    }


def test_reservation_needs_items() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_reservation("ord-1", [])
    assert fields_of(error) == {"items"}


def test_order_id_follows_the_id_pattern() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_reservation("ORD 1", [ReservationItem("sku-1", 1)])
    assert fields_of(error) == {"order_id"}
    with pytest.raises(InvalidArgument):
        domain.validate_reservation("o" * 65, [ReservationItem("sku-1", 1)])


def test_reserved_lists_every_short_product() -> None:
    levels = {
        "a": StockLevel("a", on_hand=10, reserved=0),
        "b": StockLevel("b", on_hand=5, reserved=3),
    }
    items = [ReservationItem("a", 1), ReservationItem("b", 5), ReservationItem("c", 1)]
    with pytest.raises(FailedPrecondition) as error:
        domain.reserved(levels, items)
    assert [(v.type, v.subject) for v in error.value.violations] == [("STOCK", "b"), ("STOCK", "c")]
    assert error.value.violations[0].description == "requested 5, available 2"


def test_reserved_raises_every_level() -> None:
    levels = {"a": StockLevel("a", on_hand=10), "b": StockLevel("b", on_hand=5, reserved=3)}
    after = domain.reserved(levels, [ReservationItem("a", 10), ReservationItem("b", 2)])
    assert after == [StockLevel("a", 10, 10), StockLevel("b", 5, 5)]


def test_released_gives_units_back() -> None:
    reservation = Reservation("o", (ReservationItem("a", 3),), ReservationState.ACTIVE)
    assert domain.released({"a": StockLevel("a", 10, 4)}, reservation) == [StockLevel("a", 10, 1)]


def test_same_items_in_any_order_is_the_same_reservation() -> None:
    existing = Reservation(
        "o", (ReservationItem("a", 1), ReservationItem("b", 2)), ReservationState.RELEASED
    )
    again = [ReservationItem("b", 2), ReservationItem("a", 1)]
    assert domain.same_items(existing, again) is existing


@pytest.mark.parametrize(
    "items",
    [
        [ReservationItem("a", 1)],
        [ReservationItem("a", 1), ReservationItem("b", 3)],
        [ReservationItem("a", 1), ReservationItem("b", 2), ReservationItem("c", 1)],
    ],
)
def test_other_items_for_the_same_order_already_exist(items: list[ReservationItem]) -> None:
    existing = Reservation(
        "o", (ReservationItem("a", 1), ReservationItem("b", 2)), ReservationState.ACTIVE
    )
    with pytest.raises(AlreadyExists) as error:
        domain.same_items(existing, items)
    assert (error.value.resource_type, error.value.name) == (domain.RESERVATION, "o")
