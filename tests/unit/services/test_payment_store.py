"""services.payment.store on a real SQLite file: keys, declines, refunds, sharing."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.problems import FailedPrecondition, InvalidArgument, NotFound
from services.common.money import Money
from services.payment.domain import PAYMENT, ChargeRequest, Payment, PaymentStatus
from services.payment.store import PaymentStore

TEN_EUROS = Money("EUR", 10, 0)
_ids = itertools.count(1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "payment.db"


@pytest.fixture
def store(path: Path) -> Iterator[PaymentStore]:
    store = PaymentStore(path)
    yield store
    store.close()


def request(
    key: str = "key-1", order_id: str = "ord-1", amount: Money = TEN_EUROS
) -> ChargeRequest:
    return ChargeRequest(order_id, "alice", amount, key)


def charge(
    store: PaymentStore, wanted: ChargeRequest, decline_reason: str | None = None
) -> Payment:
    number = next(_ids)
    return store.charge(
        wanted, payment_id=f"pay-{number}", now_ns=number * 1_000, decline_reason=decline_reason
    )


def test_a_charge_is_recorded(store: PaymentStore) -> None:
    made = charge(store, request())
    assert (made.status, made.amount, made.charge_key) == (
        PaymentStatus.CHARGED,
        TEN_EUROS,
        "key-1",
    )
    assert store.get(made.payment_id) == made
    assert store.get("pay-none") is None


def test_repeating_a_charge_returns_the_first_payment(store: PaymentStore) -> None:
    first = charge(store, request())
    again = charge(store, request())
    assert again == first
    assert store.page(order_id="ord-1", customer_id="", before=None, limit=10)[0] == [first]


@pytest.mark.parametrize(
    "other",
    [request(amount=Money("EUR", 11, 0)), request(order_id="ord-2")],
    ids=["amount", "order"],
)
def test_a_key_reused_for_another_charge_is_refused_and_charges_nothing(
    store: PaymentStore, other: ChargeRequest
) -> None:
    first = charge(store, request())
    with pytest.raises(InvalidArgument) as error:
        charge(store, other)
    assert [v.field for v in error.value.violations] == ["idempotency_key"]
    assert store.page(order_id=other.order_id, customer_id="", before=None, limit=10)[0] == (
        [first] if other.order_id == "ord-1" else []
    )


def test_a_declined_key_stays_declined(store: PaymentStore) -> None:
    with pytest.raises(FailedPrecondition):
        charge(store, request(), decline_reason="declined")
    # The policy says yes now (settings changed, say): the key was declined, and stays so.
    with pytest.raises(FailedPrecondition) as error:
        charge(store, request())
    assert [v.description for v in error.value.violations] == ["declined"]
    assert store.page(order_id="ord-1", customer_id="", before=None, limit=10)[0] == []
    with pytest.raises(InvalidArgument):
        charge(store, request(amount=Money("EUR", 1, 0)))


def test_a_charged_key_is_not_declined_later(store: PaymentStore) -> None:
    first = charge(store, request())
    assert charge(store, request(), decline_reason="declined") == first


def test_a_refund_refunds_once_per_key(store: PaymentStore) -> None:
    made = charge(store, request())
    refunded = store.refund(made.payment_id, "refund-1", 9_000)
    assert (refunded.status, refunded.refund_key, refunded.refund_time_ns) == (
        PaymentStatus.REFUNDED,
        "refund-1",
        9_000,
    )
    assert store.refund(made.payment_id, "refund-1", 10_000) == refunded
    assert store.get(made.payment_id) == refunded
    with pytest.raises(FailedPrecondition):
        store.refund(made.payment_id, "refund-2", 11_000)


def test_refunding_an_unknown_payment_is_not_found(store: PaymentStore) -> None:
    with pytest.raises(NotFound) as error:
        store.refund("pay-none", "refund-1", 1)
    assert (error.value.resource_type, error.value.name) == (PAYMENT, "pay-none")


def test_a_refund_key_reused_for_another_payment_is_refused(store: PaymentStore) -> None:
    one = charge(store, request("key-1"))
    two = charge(store, request("key-2"))
    store.refund(one.payment_id, "refund-1", 1)
    with pytest.raises(InvalidArgument) as error:
        store.refund(two.payment_id, "refund-1", 2)
    assert [v.field for v in error.value.violations] == ["idempotency_key"]
    assert store.get(two.payment_id) == two


def test_charge_and_refund_keys_are_scoped_apart(store: PaymentStore) -> None:
    made = charge(store, request("same-key"))
    assert store.refund(made.payment_id, "same-key", 1).status is PaymentStatus.REFUNDED
    another = charge(store, request("other-key"))
    assert another.payment_id != made.payment_id


def test_an_order_lists_its_payments_newest_first_in_pages(store: PaymentStore) -> None:
    made = [charge(store, request(f"key-{n}")) for n in range(5)]
    charge(store, request("elsewhere", order_id="ord-2"))
    first, cursor = store.page(order_id="ord-1", customer_id="", before=None, limit=3)
    assert first == made[::-1][:3]
    assert cursor is not None
    rest, end = store.page(order_id="ord-1", customer_id="", before=cursor, limit=3)
    assert (rest, end) == (made[::-1][3:], None)
    assert store.page(order_id="ord-1", customer_id="bob", before=None, limit=3) == ([], None)


def test_concurrent_charges_with_one_key_from_two_stores_make_one_payment(
    path: Path, store: PaymentStore
) -> None:
    other = PaymentStore(path)  # another instance on the same file
    answers: list[Payment] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def retry(on: PaymentStore, number: int) -> None:
        start.wait()
        made = on.charge(request(), payment_id=f"pay-t{number}", now_ns=number)
        with lock:
            answers.append(made)

    threads = [
        threading.Thread(target=retry, args=(store if n % 2 else other, n)) for n in range(16)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert len(answers) == 16
    assert len({answer.payment_id for answer in answers}) == 1
    assert store.page(order_id="ord-1", customer_id="", before=None, limit=50)[0] == answers[:1]


def test_payments_outlive_the_store(path: Path, store: PaymentStore) -> None:
    made = charge(store, request())
    store.close()
    reopened = PaymentStore(path)
    try:
        assert reopened.get(made.payment_id) == made
        assert charge(reopened, request()) == made
    finally:
        reopened.close()
