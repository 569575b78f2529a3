"""services.shipping.store on a real SQLite file: keys, refusals, cancelling, sharing."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mesh.problems import FailedPrecondition, InvalidArgument, NotFound
from services.shipping.domain import (
    SHIPMENT,
    Address,
    Shipment,
    ShipmentItem,
    ShipmentRequest,
    ShipmentStatus,
)
from services.shipping.store import ShippingStore

HOME = Address("Ada Lovelace", "12 St James's Square", "London", "SW1Y 4JH", "GB")
ITEMS = (ShipmentItem("sku-mug", 2), ShipmentItem("sku-espresso", 1))
STEP = 1_000
_ids = itertools.count(1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "shipping.db"


@pytest.fixture
def store(path: Path) -> Iterator[ShippingStore]:
    store = ShippingStore(path)
    yield store
    store.close()


def request(key: str = "key-1", **changes: object) -> ShipmentRequest:
    return replace(ShipmentRequest("ord-1", HOME, ITEMS, key), **changes)  # type: ignore[arg-type]


def create(
    store: ShippingStore,
    wanted: ShipmentRequest,
    *,
    now_ns: int = 0,
    step_ns: int = STEP,
    refusal: tuple[str, str] | None = None,
) -> Shipment:
    return store.create(
        wanted,
        shipment_id=f"shp-{next(_ids)}",
        now_ns=now_ns,
        step_ns=step_ns,
        refusal=refusal,
    )


def test_a_shipment_is_recorded_with_its_items_in_order(store: ShippingStore) -> None:
    made = create(store, request(), now_ns=50)
    assert (made.order_id, made.address, made.items) == ("ord-1", HOME, ITEMS)
    assert (made.create_time_ns, made.step_ns, made.cancel_time_ns) == (50, STEP, None)
    assert store.get(made.shipment_id) == made
    assert store.get("shp-none") is None


def test_repeating_a_creation_returns_the_first_shipment(store: ShippingStore) -> None:
    first = create(store, request(), now_ns=50)
    assert create(store, request(items=ITEMS[::-1]), now_ns=99, step_ns=7) == first


def test_a_key_reused_for_another_shipment_is_refused(store: ShippingStore) -> None:
    create(store, request())
    with pytest.raises(InvalidArgument) as error:
        create(store, request(address=replace(HOME, postal_code="SW1A 1AA")))
    assert [v.field for v in error.value.violations] == ["idempotency_key"]


def test_a_refused_key_stays_refused(store: ShippingStore) -> None:
    with pytest.raises(FailedPrecondition):
        create(store, request(), refusal=("GB", "no"))
    with pytest.raises(FailedPrecondition) as error:
        create(store, request())  # the policy would take it now: the key was refused
    assert [(v.subject, v.description) for v in error.value.violations] == [("GB", "no")]
    with pytest.raises(InvalidArgument):
        create(store, request(order_id="ord-2"))


def test_cancelling_before_it_leaves(store: ShippingStore) -> None:
    made = create(store, request(), now_ns=0)
    cancelled = store.cancel(made.shipment_id, STEP + 5)  # PACKED
    assert cancelled.cancel_time_ns == STEP + 5
    assert store.get(made.shipment_id) == cancelled
    assert store.cancel(made.shipment_id, 10 * STEP) == cancelled
    assert cancelled.progress(10 * STEP).status is ShipmentStatus.CANCELLED


def test_a_shipment_that_left_is_not_cancelled(store: ShippingStore) -> None:
    made = create(store, request(), now_ns=0)
    with pytest.raises(FailedPrecondition):
        store.cancel(made.shipment_id, 2 * STEP)
    assert store.get(made.shipment_id) == made


def test_cancelling_an_unknown_shipment_is_not_found(store: ShippingStore) -> None:
    with pytest.raises(NotFound) as error:
        store.cancel("shp-none", 1)
    assert (error.value.resource_type, error.value.name) == (SHIPMENT, "shp-none")


def test_each_shipment_keeps_the_step_it_was_created_with(store: ShippingStore) -> None:
    slow = create(store, request("slow"), now_ns=0, step_ns=10 * STEP)
    fast = create(store, request("fast"), now_ns=0, step_ns=STEP)
    stored = [store.get(shipment.shipment_id) for shipment in (slow, fast)]
    assert stored == [slow, fast]
    assert [shipment.progress(5 * STEP).status for shipment in (slow, fast)] == [
        ShipmentStatus.CREATED,
        ShipmentStatus.DELIVERED,
    ]


def test_concurrent_creations_with_one_key_from_two_stores_make_one_shipment(
    path: Path, store: ShippingStore
) -> None:
    other = ShippingStore(path)
    answers: list[Shipment] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def retry(on: ShippingStore, number: int) -> None:
        start.wait()
        made = on.create(request(), shipment_id=f"shp-t{number}", now_ns=number, step_ns=STEP)
        with lock:
            answers.append(made)

    threads = [
        threading.Thread(target=retry, args=(store if n % 2 else other, n)) for n in range(12)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert len(answers) == 12
    assert len({answer.shipment_id for answer in answers}) == 1
