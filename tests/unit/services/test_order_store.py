"""services.order.store on a real SQLite file: orders and their sagas, request keys,
leases, and a database made before the saga."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.order.domain import (
    DEFAULT_ADDRESS,
    Money,
    Order,
    OrderItem,
    OrderStatus,
    SagaStep,
    StepStatus,
    new_saga,
    request_fingerprint,
)
from services.order.store import KeyUse, LeaseLost, OrderStore

EUR = Money("EUR", 2, 500_000_000)


def order(order_id: str, customer_id: str = "cust-1", request_id: str = "") -> Order:
    return Order(
        order_id=order_id,
        customer_id=customer_id,
        items=(OrderItem("a", 2, EUR), OrderItem("b", 1, Money("EUR", 0, 10))),
        total=Money("EUR", 5, 10),
        status=OrderStatus.PENDING,
        create_time_ns=1_700_000_000_123_456_789,
        request_id=request_id,
        address=DEFAULT_ADDRESS,
        saga=new_saga(1_700_000_000_123_456_789),
    )


def stored(store: OrderStore, new: Order) -> Order:
    """What PlaceOrder does first: record the order PENDING, its lease held by "a"."""
    assert store.begin(new, owner="a", lease_until_ns=100)
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
    assert not store.begin(order("ord-2", request_id="r1"), owner="b", lease_until_ns=0)
    assert store.key_use("cust-1", "r1") == KeyUse(request_fingerprint(first.items), first)
    assert store.get("ord-2") is None


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
        assert not store.begin(order("ord-2", request_id="r1"), owner="b", lease_until_ns=0)
    finally:
        other.close()


# -- sagas and leases -------------------------------------------------------------------


def test_a_transition_writes_the_step_and_the_order_while_the_lease_is_held(
    store: OrderStore,
) -> None:
    stored(store, order("ord-1"))
    step = SagaStep("charge_payment", StepStatus.DONE, "", 1, 0, 55)
    written = store.advance("ord-1", owner="a", lease_until_ns=200, step=step, payment_id="pay-1")
    assert written.step("charge_payment") == step
    assert written.payment_id == "pay-1"
    assert store.lease("ord-1") == ("a", 200)
    with pytest.raises(LeaseLost):
        store.advance("ord-1", owner="b", lease_until_ns=300, status=OrderStatus.CANCELLED)
    assert store.get("ord-1") == written


def test_only_expired_leases_are_claimed_and_once(store: OrderStore) -> None:
    stored(store, order("ord-1"))  # lease until 100
    assert store.claim_expired(100, owner="r", lease_until_ns=500, limit=10) == []
    assert store.claim_expired(101, owner="r", lease_until_ns=500, limit=10) == ["ord-1"]
    assert store.claim_expired(101, owner="s", lease_until_ns=500, limit=10) == []
    with pytest.raises(LeaseLost):  # the first driver's writes are refused now
        store.advance("ord-1", owner="a", lease_until_ns=600)
    store.advance("ord-1", owner="r", lease_until_ns=600, status=OrderStatus.CONFIRMED)
    assert store.claim_expired(10**18, owner="s", lease_until_ns=0, limit=10) == []
    assert store.lease("ord-1") is None


def test_a_cancelled_order_frees_its_key(store: OrderStore) -> None:
    stored(store, order("ord-1", request_id="r1"))
    store.advance("ord-1", owner="a", lease_until_ns=0, status=OrderStatus.CANCELLED)
    assert store.key_use("cust-1", "r1") is None
    assert store.begin(order("ord-2", request_id="r1"), owner="a", lease_until_ns=0)
    use = store.key_use("cust-1", "r1")
    assert use is not None
    assert use.order.order_id == "ord-2"


def test_a_database_made_before_the_saga_is_brought_up_to_date(path: Path) -> None:
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE orders (seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL
            UNIQUE, customer_id TEXT NOT NULL, request_id TEXT NOT NULL, status INTEGER NOT
            NULL, currency_code TEXT NOT NULL, total_units INTEGER NOT NULL, total_nanos
            INTEGER NOT NULL, create_time_ns INTEGER NOT NULL);
        CREATE UNIQUE INDEX orders_by_request ON orders (customer_id, request_id)
            WHERE request_id <> '';
        INSERT INTO orders (order_id, customer_id, request_id, status, currency_code,
            total_units, total_nanos, create_time_ns) VALUES ('ord-old', 'c', 'r', 1, 'EUR',
            5, 0, 7);
        """
    )
    old.commit()
    old.close()
    store = OrderStore(path)
    try:
        before = store.get("ord-old")
        assert before is not None
        assert (before.status, before.saga, before.address) == (OrderStatus.CONFIRMED, (), None)
        stored(store, replace(order("ord-new"), customer_id="c"))
    finally:
        store.close()
