"""services.inventory.store on a real SQLite file: atomicity, idempotency, sharing;
known products only, and a StockChanged in the outbox with every change."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from shop.inventory.v1 import events_pb2

from mesh.problems import AlreadyExists, FailedPrecondition, NotFound
from services.inventory.domain import (
    PRODUCT,
    Reservation,
    ReservationItem,
    ReservationState,
    StockLevel,
)
from services.inventory.store import InventoryStore

ACTIVE, RELEASED = ReservationState.ACTIVE, ReservationState.RELEASED


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "inventory.db"


@pytest.fixture
def store(path: Path) -> Iterator[InventoryStore]:
    store = InventoryStore(path)
    for product_id in ("a", "b", "sku-new"):
        store.learn_product(product_id, None, "test")
    store.adjust("a", 10, "opening")
    store.adjust("b", 3, "opening")
    yield store
    store.close()


def outbox(path: Path) -> list[tuple[str, str, int, events_pb2.StockChanged]]:
    """(topic, stream, version, message) of every event recorded, in commit order."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT topic, stream, version, type, data FROM outbox ORDER BY position")
        recorded = []
        for topic, stream, version, kind, data in rows:
            assert kind == "shop.inventory.v1.StockChanged"
            recorded.append((topic, stream, version, events_pb2.StockChanged.FromString(data)))
    return recorded


def changes(path: Path, product_id: str) -> list[tuple[int, int, int, str]]:
    """(version, on_hand, reserved, cause) of each StockChanged of `product_id`."""
    return [
        (version, message.on_hand, message.reserved, message.cause)
        for _, stream, version, message in outbox(path)
        if stream == f"stock-{product_id}"
    ]


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
    store.learn_product("never", None, "test")  # known, never stocked
    with pytest.raises(FailedPrecondition) as error:
        store.reserve("o1", items(("a", 4), ("b", 4), ("never", 1)))
    assert [v.subject for v in error.value.violations] == ["b", "never"]
    assert store.stock("a") == StockLevel("a", on_hand=10, reserved=0)
    assert store.stock("b") == StockLevel("b", on_hand=3, reserved=0)
    assert store.reservation("o1") is None


def test_stock_of_an_unknown_product_is_not_found_and_changes_nothing(
    path: Path, store: InventoryStore
) -> None:
    recorded = len(outbox(path))
    with pytest.raises(NotFound) as adjusting:
        store.adjust("ghost", 5, "delivery")
    with pytest.raises(NotFound) as reserving:
        store.reserve("o1", items(("a", 1), ("ghost", 1), ("phantom", 1)))
    assert (adjusting.value.resource_type, adjusting.value.name) == (PRODUCT, "ghost")
    assert (reserving.value.resource_type, reserving.value.name) == (PRODUCT, "ghost")
    assert store.stock("ghost") == StockLevel("ghost")  # a read: zeros, as never stocked
    assert store.stock("a").reserved == 0
    assert store.reservation("o1") is None
    assert len(outbox(path)) == recorded


def test_a_product_learnt_takes_stock(store: InventoryStore) -> None:
    assert store.knows("ghost") is False
    assert store.learn_product("ghost", None, "test") is True
    assert store.knows("ghost") is True
    assert store.adjust("ghost", 5, "delivery") == StockLevel("ghost", on_hand=5)


def test_learning_a_product_again_changes_nothing(path: Path, store: InventoryStore) -> None:
    assert store.learn_product("sku-open", 40, "opening") is True
    store.adjust("sku-open", -5, "sold")
    recorded = len(outbox(path))
    assert store.learn_product("sku-open", 40, "opening") is False  # the event redelivered
    assert store.stock("sku-open") == StockLevel("sku-open", on_hand=35)
    assert len(outbox(path)) == recorded


def test_every_change_records_the_stock_it_leaves(path: Path, store: InventoryStore) -> None:
    store.learn_product("sku-ev", 10, "opening")
    store.adjust("sku-ev", 2, "delivery")
    store.reserve("o1", items(("sku-ev", 5), ("a", 1)))
    store.release("o1")
    store.release("o1")  # released already: no change, no event
    assert changes(path, "sku-ev") == [
        (1, 10, 0, "opened"),
        (2, 12, 0, "adjusted"),
        (3, 12, 5, "reserved"),
        (4, 12, 0, "released"),
    ]
    assert [version for version, *_ in changes(path, "a")] == [1, 2, 3]  # adjust, reserve, release
    (topic, _, _, last) = outbox(path)[-1]
    assert topic == "inventory"
    assert last.available == last.on_hand - last.reserved


def test_a_refused_change_records_no_event(path: Path, store: InventoryStore) -> None:
    store.reserve("o1", items(("a", 8)))
    recorded = len(outbox(path))
    with pytest.raises(FailedPrecondition):
        store.adjust("a", -3, "breakage")
    with pytest.raises(FailedPrecondition):
        store.reserve("o2", items(("a", 3)))
    store.reserve("o1", items(("a", 8)))  # the same reservation again: nothing new
    assert len(outbox(path)) == recorded


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


def test_opening_stock_applies_only_to_a_known_product_never_stocked(
    path: Path, store: InventoryStore
) -> None:
    assert store.open_stock("sku-unknown", 40, "opening") is False
    assert store.stock("sku-unknown").on_hand == 0
    assert store.open_stock("sku-new", 40, "opening") is True
    assert store.stock("sku-new").on_hand == 40
    store.adjust("sku-new", -5, "sold")
    other = InventoryStore(path)  # a second instance starting later on the same file
    try:
        assert other.open_stock("sku-new", 40, "opening") is False
    finally:
        other.close()
    assert store.stock("sku-new").on_hand == 35
