"""InventoryServicer methods called directly, on a tmp_path store that knows products
"a" and "b"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from shop.inventory.v1 import inventory_pb2 as pb

from mesh.problems import FailedPrecondition, InvalidArgument, NotFound
from services.inventory.domain import PRODUCT, RESERVATION
from services.inventory.servicer import InventoryServicer
from services.inventory.store import InventoryStore


@pytest.fixture
async def servicer(tmp_path: Path, context: Any) -> AsyncIterator[InventoryServicer]:
    store = InventoryStore(tmp_path / "inventory.db")
    for product_id in ("a", "b"):
        store.learn_product(product_id, None, "test")
    servicer = InventoryServicer(store)
    await servicer.AdjustStock(pb.AdjustStockRequest(product_id="a", delta=5, reason="x"), context)
    yield servicer
    store.close()


def reserve_request(order_id: str, *pairs: tuple[str, int]) -> pb.ReserveStockRequest:
    return pb.ReserveStockRequest(
        order_id=order_id,
        items=[pb.ReservationItem(product_id=p, quantity=q) for p, q in pairs],
    )


async def test_stock_reports_available(servicer: InventoryServicer, context: Any) -> None:
    await servicer.ReserveStock(reserve_request("o1", ("a", 2)), context)
    response = await servicer.GetStock(pb.GetStockRequest(product_id="a"), context)
    assert response.stock == pb.StockLevel(product_id="a", on_hand=5, reserved=2, available=3)


async def test_stock_of_a_malformed_id_is_invalid(
    servicer: InventoryServicer, context: Any
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.GetStock(pb.GetStockRequest(product_id="A!"), context)
    assert [v.field for v in error.value.violations] == ["product_id"]


async def test_zero_delta_is_invalid(servicer: InventoryServicer, context: Any) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.AdjustStock(pb.AdjustStockRequest(product_id="a"), context)
    assert [v.field for v in error.value.violations] == ["delta"]


async def test_reserve_then_release(servicer: InventoryServicer, context: Any) -> None:
    reserved = await servicer.ReserveStock(reserve_request("o1", ("a", 5)), context)
    assert reserved.reservation.state == pb.RESERVATION_STATE_ACTIVE
    assert [(i.product_id, i.quantity) for i in reserved.reservation.items] == [("a", 5)]
    released = await servicer.ReleaseStock(pb.ReleaseStockRequest(order_id="o1"), context)
    assert released.reservation.state == pb.RESERVATION_STATE_RELEASED
    got = await servicer.GetReservation(pb.GetReservationRequest(order_id="o1"), context)
    assert got.reservation == released.reservation


async def test_shortage_is_a_failed_precondition(servicer: InventoryServicer, context: Any) -> None:
    with pytest.raises(FailedPrecondition) as error:
        await servicer.ReserveStock(reserve_request("o1", ("a", 6), ("b", 1)), context)
    assert [(v.type, v.subject) for v in error.value.violations] == [("STOCK", "a"), ("STOCK", "b")]


async def test_duplicate_products_are_invalid(servicer: InventoryServicer, context: Any) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.ReserveStock(reserve_request("o1", ("a", 1), ("a", 1)), context)
    assert [v.field for v in error.value.violations] == ["items[1].product_id"]


async def test_unknown_reservation_is_not_found(servicer: InventoryServicer, context: Any) -> None:
    with pytest.raises(NotFound) as error:
        await servicer.GetReservation(pb.GetReservationRequest(order_id="o9"), context)
    assert (error.value.resource_type, error.value.name) == (RESERVATION, "o9")
    with pytest.raises(NotFound):
        await servicer.ReleaseStock(pb.ReleaseStockRequest(order_id="o9"), context)


@pytest.mark.parametrize("method", ["ReleaseStock", "GetReservation"])
@pytest.mark.parametrize("order_id", ["", "O-1", "o" * 20_000])
async def test_a_malformed_order_id_is_invalid_before_any_lookup(
    servicer: InventoryServicer, context: Any, method: str, order_id: str
) -> None:
    request = getattr(pb, f"{method}Request")(order_id=order_id)
    with pytest.raises(InvalidArgument) as error:
        await getattr(servicer, method)(request, context)
    assert [v.field for v in error.value.violations] == ["order_id"]


async def test_more_items_than_an_order_holds_are_invalid(
    servicer: InventoryServicer, context: Any
) -> None:
    request = reserve_request("o1", *((f"p{index}", 1) for index in range(101)))
    with pytest.raises(InvalidArgument) as error:
        await servicer.ReserveStock(request, context)
    assert [v.field for v in error.value.violations] == ["items"]


async def test_stock_of_a_product_not_learnt_is_not_found(
    servicer: InventoryServicer, context: Any
) -> None:
    with pytest.raises(NotFound) as adjusting:
        await servicer.AdjustStock(pb.AdjustStockRequest(product_id="new", delta=1), context)
    with pytest.raises(NotFound) as reserving:
        await servicer.ReserveStock(reserve_request("o1", ("a", 1), ("new", 1)), context)
    for error in (adjusting, reserving):
        assert (error.value.resource_type, error.value.name) == (PRODUCT, "new")
    response = await servicer.GetStock(pb.GetStockRequest(product_id="new"), context)
    assert response.stock == pb.StockLevel(product_id="new")


async def test_each_change_wakes_the_outbox(tmp_path: Path, context: Any) -> None:
    woken: list[str] = []
    store = InventoryStore(tmp_path / "inventory.db")
    store.learn_product("a", None, "test")
    servicer = InventoryServicer(store, on_changed=lambda: woken.append("changed"))
    try:
        await servicer.AdjustStock(pb.AdjustStockRequest(product_id="a", delta=2), context)
        await servicer.ReserveStock(reserve_request("o1", ("a", 1)), context)
        await servicer.ReleaseStock(pb.ReleaseStockRequest(order_id="o1"), context)
    finally:
        store.close()
    assert woken == ["changed"] * 3
