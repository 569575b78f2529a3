"""Payment's events in its outbox (services.payment.events, recorded by the store): one
per settled key, in the transaction that settles it, and none for a retry with a key
already settled or for a call that is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from shop.payment.v1 import events_pb2

from mesh.problems import FailedPrecondition, InvalidArgument
from services.common.money import Money
from services.payment.domain import ChargeRequest
from services.payment.store import PaymentStore

AMOUNT = Money("USD", 24, 500_000_000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PaymentStore]:
    store = PaymentStore(tmp_path / "payment.db")
    yield store
    store.close()


def outbox(store: PaymentStore) -> list[tuple[str, str, int, str]]:
    """(topic, stream, version, type) of every recorded event, in commit order."""
    rows = store.database.query("SELECT topic, stream, version, type FROM outbox ORDER BY position")
    return [(topic, stream, version, kind) for topic, stream, version, kind in rows]


def data(store: PaymentStore, position: int) -> bytes:
    [(payload,)] = store.database.query("SELECT data FROM outbox WHERE position = ?", (position,))
    return bytes(payload)


def charge_request(key: str = "ord-1.charge", order_id: str = "ord-1") -> ChargeRequest:
    return ChargeRequest(order_id, "alice", AMOUNT, key)


def test_a_charge_records_captured_once_however_often_it_is_retried(store: PaymentStore) -> None:
    woken: list[int] = []
    store.on_events(lambda: woken.append(1))
    store.charge(charge_request(), payment_id="pay-1", now_ns=2_000_000_000)
    store.charge(charge_request(), payment_id="pay-2", now_ns=3_000_000_000)  # the retry
    assert outbox(store) == [("payment", "payment-pay-1", 1, "shop.payment.v1.PaymentCaptured")]
    assert len(woken) == 1
    captured = events_pb2.PaymentCaptured.FromString(data(store, 1))
    assert (captured.payment_id, captured.order_id, captured.customer_id) == (
        "pay-1",
        "ord-1",
        "alice",
    )
    assert (captured.amount.units, captured.amount.nanos) == (24, 500_000_000)


def test_a_declined_charge_records_declined_in_the_orders_stream(store: PaymentStore) -> None:
    for _ in range(2):  # a retry is declined again, and records nothing
        with pytest.raises(FailedPrecondition):
            store.charge(charge_request(), payment_id="pay-1", now_ns=1, decline_reason="no funds")
    assert outbox(store) == [
        ("payment", "payment-declined-ord-1", 1, "shop.payment.v1.PaymentDeclined")
    ]
    declined = events_pb2.PaymentDeclined.FromString(data(store, 1))
    assert (declined.order_id, declined.reason) == ("ord-1", "no funds")


def test_a_refund_records_refunded_after_captured_and_its_retry_nothing(
    store: PaymentStore,
) -> None:
    store.charge(charge_request(), payment_id="pay-1", now_ns=1)
    store.refund("pay-1", "ord-1.refund", now_ns=2)
    store.refund("pay-1", "ord-1.refund", now_ns=3)
    with pytest.raises(FailedPrecondition):  # refunded already, with another key
        store.refund("pay-1", "another-key", now_ns=4)
    assert outbox(store) == [
        ("payment", "payment-pay-1", 1, "shop.payment.v1.PaymentCaptured"),
        ("payment", "payment-pay-1", 2, "shop.payment.v1.PaymentRefunded"),
    ]
    refunded = events_pb2.PaymentRefunded.FromString(data(store, 2))
    assert (refunded.payment_id, refunded.amount.units) == ("pay-1", 24)


def test_a_key_reused_for_another_charge_records_nothing(store: PaymentStore) -> None:
    store.charge(charge_request(), payment_id="pay-1", now_ns=1)
    with pytest.raises(InvalidArgument):
        store.charge(charge_request(order_id="ord-2"), payment_id="pay-2", now_ns=2)
    assert len(outbox(store)) == 1
