"""services.order.store on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.order.domain import Money, Order, OrderItem, OrderStatus, request_fingerprint
from services.order.store import HoldClaimed, KeyUse, OrderStore, RequestKey

EUR = Money("EUR", 2, 500_000_000)


def order(order_id: str, customer_id: str = "cust-1", request_id: str = "") -> Order:
    return Order(
        order_id=order_id,
        customer_id=customer_id,
        items=(OrderItem("a", 2, EUR), OrderItem("b", 1, Money("EUR", 0, 10))),
        total=Money("EUR", 5, 10),
        status=OrderStatus.CONFIRMED,
        create_time_ns=1_700_000_000_123_456_789,
        request_id=request_id,
    )


def key_of(new: Order) -> RequestKey | None:
    """The request key PlaceOrder claims for `new`, if it has a request_id."""
    if not new.request_id:
        return None
    return RequestKey(new.customer_id, new.request_id, request_fingerprint(new.items))


def stored(store: OrderStore, new: Order) -> Order:
    """What PlaceOrder does: hold (claiming the request key), then store."""
    assert store.hold(new.order_id, 0, key_of(new))
    store.add(new)
    return new


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "order.db"


@pytest.fixture
def store(path: Path) -> Iterator[OrderStore]:
    store = OrderStore(path)
    yield store
    store.close()


def test_added_order_reads_back(store: OrderStore) -> None:
    assert stored(store, order("ord-1")) == order("ord-1")
    assert store.get("ord-1") == order("ord-1")
    assert store.get("ord-2") is None


def test_a_used_key_stands_for_its_order_and_is_not_claimed_again(store: OrderStore) -> None:
    first = stored(store, order("ord-1", request_id="r1"))
    assert not store.hold("ord-2", 0, key_of(order("ord-2", request_id="r1")))
    assert store.key_use("cust-1", "r1") == KeyUse(request_fingerprint(first.items), first)
    assert store.claim_holds(LATER) == []  # the refused hold recorded nothing


def test_request_ids_are_per_customer(store: OrderStore) -> None:
    stored(store, order("ord-1", customer_id="c1", request_id="r1"))
    assert stored(store, order("ord-2", customer_id="c2", request_id="r1")).order_id == "ord-2"
    use = store.key_use("c2", "r1")
    assert use is not None
    assert use.order == order("ord-2", customer_id="c2", request_id="r1")


def test_orders_without_request_id_never_collide(store: OrderStore) -> None:
    stored(store, order("ord-1"))
    assert stored(store, order("ord-2")).order_id == "ord-2"
    assert store.key_use("cust-1", "") is None


def test_pages_newest_first_with_customer_filter(store: OrderStore) -> None:
    for index in range(5):
        stored(store, order(f"ord-{index}", customer_id="c1" if index % 2 == 0 else "c2"))
    first, cursor = store.page(customer_id="", before=None, limit=2)
    assert [o.order_id for o in first] == ["ord-4", "ord-3"]
    rest, end = store.page(customer_id="", before=cursor, limit=10)
    assert [o.order_id for o in rest] == ["ord-2", "ord-1", "ord-0"]
    assert end is None
    mine, _ = store.page(customer_id="c1", before=None, limit=10)
    assert [o.order_id for o in mine] == ["ord-4", "ord-2", "ord-0"]


def test_two_stores_on_one_file_share_writes(path: Path, store: OrderStore) -> None:
    other = OrderStore(path)
    try:
        stored(other, order("ord-1", request_id="r1"))
        assert store.get("ord-1") == order("ord-1", request_id="r1")
        assert not store.hold("ord-2", 0, key_of(order("ord-2", request_id="r1")))
    finally:
        other.close()


# -- holds ------------------------------------------------------------------------------

LATER = 2**62  # a cutoff after every hold


def test_storing_an_order_drops_its_hold(store: OrderStore) -> None:
    store.hold("ord-1", 10)
    store.add(order("ord-1"))
    assert store.claim_holds(LATER) == []


def test_a_claimed_key_is_in_flight_until_its_hold_goes(store: OrderStore) -> None:
    key = RequestKey("cust-1", "r-1", "fp")
    assert store.hold("ord-1", 10, key)
    assert store.key_use("cust-1", "r-1") == KeyUse("fp", None)
    assert not store.hold("ord-2", 10, key)
    assert not store.hold("ord-3", 10, RequestKey("cust-1", "r-1", "other items"))
    store.drop_hold("ord-1")  # its attempt ended without an order
    assert store.key_use("cust-1", "r-1") is None
    assert store.hold("ord-4", 10, key)


def test_storing_the_order_passes_the_key_to_it(store: OrderStore) -> None:
    placed = order("ord-1", request_id="r-1")
    assert store.hold("ord-1", 10, key_of(placed))
    store.add(placed)
    assert store.key_use("cust-1", "r-1") == KeyUse(request_fingerprint(placed.items), placed)


def test_a_swept_hold_frees_its_key(store: OrderStore) -> None:
    assert store.hold("ord-1", 10, RequestKey("cust-1", "r-1", "fp"))
    assert store.claim_holds(LATER) == ["ord-1"]
    assert store.key_use("cust-1", "r-1") == KeyUse("fp", None)  # until it is dropped
    store.drop_hold("ord-1")
    assert store.key_use("cust-1", "r-1") is None


def test_only_holds_older_than_the_cutoff_are_claimed(store: OrderStore) -> None:
    store.hold("ord-old", 10)
    store.hold("ord-new", 30)
    assert store.claim_holds(20) == ["ord-old"]
    assert store.claim_holds(20) == ["ord-old"]  # until dropped: a sweeper may have died
    store.drop_hold("ord-old")
    assert store.claim_holds(LATER) == ["ord-new"]


@pytest.mark.parametrize("dropped", [False, True])
def test_an_order_whose_hold_was_claimed_cannot_be_stored(store: OrderStore, dropped: bool) -> None:
    """Claimed, or claimed, released and dropped by the sweeper since."""
    store.hold("ord-1", 10)
    store.claim_holds(LATER)
    if dropped:
        store.drop_hold("ord-1")
    with pytest.raises(HoldClaimed):
        store.add(order("ord-1"))
    assert store.get("ord-1") is None
