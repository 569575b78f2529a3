"""services.inventory.store on a real SQLite file: atomicity, idempotency, sharing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.problems import AlreadyExists, FailedPrecondition, NotFound
from services.inventory.domain import Reservation, ReservationItem, ReservationState, StockLevel
from services.inventory.store import InventoryStore

ACTIVE, RELEASED = ReservationState.ACTIVE, ReservationState.RELEASED


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "inventory.db"


@pytest.fixture
def store(path: Path) -> Iterator[InventoryStore]:
    store = InventoryStore(path)
    store.adjust("a", 10, "opening")
    store.adjust("b", 3, "opening")
    yield store
    store.close()


def items(*pairs: tuple[str, int]) -> list[ReservationItem]:
    return [ReservationItem(product_id, quantity) for product_id, quantity in pairs]


def test_never_stocked_product_has_zeros(store: InventoryStore) -> None:
    assert store.stock("zzz") == StockLevel("zzz", 0, 0)


def test_adjust_changes_on_hand(store: InventoryStore) -> None:
    assert store.adjust("a", -4, "breakage") == StockLevel("a", on_hand=6, reserved=0)
    assert store.stock("a") == StockLevel("a", on_hand=6, reserved=0)


def test_adjust_below_reserved_changes_nothing(store: InventoryStore) -> None:
    store.reserve("o1", items(("a", 8)))
    with pytest.raises(FailedPrecondition):
        store.adjust("a", -3, "breakage")
    assert store.stock("a") == StockLevel("a", on_hand=10, reserved=8)


def test_reserve_holds_every_item(store: InventoryStore) -> None:
    reservation = store.reserve("o1", items(("a", 4), ("b", 3)))
    assert reservation == Reservation("o1", tuple(items(("a", 4), ("b", 3))), ACTIVE)
    assert store.stock("a") == StockLevel("a", on_hand=10, reserved=4)
    assert store.stock("b").available == 0
    assert store.reservation("o1") == reservation


def test_one_short_item_reserves_nothing(store: InventoryStore) -> None:
    with pytest.raises(FailedPrecondition) as error:
        store.reserve("o1", items(("a", 4), ("b", 4), ("never", 1)))
    assert [v.subject for v in error.value.violations] == ["b", "never"]
    assert store.stock("a") == StockLevel("a", on_hand=10, reserved=0)
    assert store.stock("b") == StockLevel("b", on_hand=3, reserved=0)
    assert store.reservation("o1") is None


def test_repeating_a_reservation_holds_nothing_more(store: InventoryStore) -> None:
    first = store.reserve("o1", items(("a", 4), ("b", 1)))
    again = store.reserve("o1", items(("b", 1), ("a", 4)))
    assert again == first
    assert store.stock("a").reserved == 4
    assert store.stock("b").reserved == 1


def test_same_order_with_other_items_already_exists(store: InventoryStore) -> None:
    store.reserve("o1", items(("a", 4)))
    with pytest.raises(AlreadyExists):
        store.reserve("o1", items(("a", 5)))
    assert store.stock("a").reserved == 4


def test_release_returns_the_units_once(store: InventoryStore) -> None:
    store.reserve("o1", items(("a", 4), ("b", 3)))
    released = store.release("o1")
    assert released.state is RELEASED
    assert store.stock("a") == StockLevel("a", on_hand=10, reserved=0)
    assert store.stock("b") == StockLevel("b", on_hand=3, reserved=0)
    assert store.release("o1") == released
    assert store.stock("a").reserved == 0
    assert store.reservation("o1") == released


def test_reserving_a_released_order_again_returns_it_unchanged(store: InventoryStore) -> None:
    store.reserve("o1", items(("a", 4)))
    released = store.release("o1")
    assert store.reserve("o1", items(("a", 4))) == released
    assert store.stock("a").reserved == 0


def test_release_of_unknown_order_is_not_found(store: InventoryStore) -> None:
    with pytest.raises(NotFound) as error:
        store.release("o-none")
    assert error.value.name == "o-none"


def test_two_stores_on_one_file_share_writes(path: Path, store: InventoryStore) -> None:
    other = InventoryStore(path)
    try:
        other.reserve("o1", items(("a", 7)))
        assert store.stock("a").reserved == 7
        with pytest.raises(FailedPrecondition):
            store.reserve("o2", items(("a", 4)))
        store.release("o1")
        assert other.stock("a").reserved == 0
    finally:
        other.close()


def test_concurrent_reservations_from_two_stores_never_oversell(
    path: Path, store: InventoryStore
) -> None:
    other = InventoryStore(path)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def reserve(on: InventoryStore, order_id: str) -> None:
        try:
            on.reserve(order_id, items(("a", 1)))
            ok = True
        except FailedPrecondition:
            ok = False
        with lock:
            outcomes.append(ok)

    threads = [
        threading.Thread(target=reserve, args=(store if n % 2 else other, f"o{n}"))
        for n in range(16)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert outcomes.count(True) == 10
    assert store.stock("a") == StockLevel("a", on_hand=10, reserved=10)


def test_opening_stock_applies_only_to_a_product_never_stocked(
    path: Path, store: InventoryStore
) -> None:
    assert store.open_stock("sku-new", 40, "opening") is True
    assert store.stock("sku-new").on_hand == 40
    store.adjust("sku-new", -5, "sold")
    other = InventoryStore(path)  # a second instance starting later on the same file
    try:
        assert other.open_stock("sku-new", 40, "opening") is False
    finally:
        other.close()
    assert store.stock("sku-new").on_hand == 35
