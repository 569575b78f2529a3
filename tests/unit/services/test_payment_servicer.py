"""PaymentServicer methods called directly, on a tmp_path store, with a fake clock, fake
ids, a recording sleep and fake callers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.type import money_pb2
from shop.payment.v1 import payment_pb2 as pb

from mesh.problems import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from mesh.server import Caller
from services.payment.domain import PAYMENT, PAYMENT_DECLINED
from services.payment.servicer import PaymentServicer
from services.payment.settings import PaymentSettings
from services.payment.store import PaymentStore

START_NS = 1_700_000_000 * 10**9
_IDS = itertools.count(1)  # shared: servicers on one store must not repeat an id


class Sleeps:
    """Records each wait instead of waiting (but yields, as a real sleep does)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PaymentStore]:
    store = PaymentStore(tmp_path / "payment.db")
    yield store
    store.close()


def make_servicer(
    store: PaymentStore, settings: PaymentSettings | None = None, **options: Any
) -> PaymentServicer:
    ticks = itertools.count(START_NS, 1_000_000)
    options.setdefault("clock", lambda: next(ticks))
    options.setdefault("new_payment_id", lambda: f"pay-{next(_IDS):04d}")
    return PaymentServicer(store, settings or PaymentSettings(), **options)


@pytest.fixture
def servicer(store: PaymentStore) -> PaymentServicer:
    return make_servicer(store)


def euros(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def charge_request(
    key: str = "charge-1", *, customer: str = "alice", order_id: str = "ord-1", units: int = 10
) -> pb.ChargeRequest:
    return pb.ChargeRequest(
        order_id=order_id, customer_id=customer, amount=euros(units), idempotency_key=key
    )


async def test_a_charge_is_returned_and_can_be_read_back(
    servicer: PaymentServicer, context: Any
) -> None:
    payment = (await servicer.Charge(charge_request(), context)).payment
    assert payment.payment_id.startswith("pay-")
    assert (payment.order_id, payment.customer_id) == ("ord-1", "alice")
    assert payment.amount == euros(10)
    assert payment.status == pb.PAYMENT_STATUS_CHARGED
    assert payment.create_time.ToNanoseconds() == START_NS
    assert not payment.HasField("refund_time")
    got = await servicer.GetPayment(pb.GetPaymentRequest(payment_id=payment.payment_id), context)
    assert got.payment == payment


async def test_a_retried_charge_returns_the_first_payment(
    servicer: PaymentServicer, context: Any
) -> None:
    first = (await servicer.Charge(charge_request(), context)).payment
    again = (await servicer.Charge(charge_request(), context)).payment
    assert again == first


async def test_concurrent_charges_with_one_key_make_one_payment(
    servicer: PaymentServicer, store: PaymentStore, context: Any
) -> None:
    answers = await asyncio.gather(*(servicer.Charge(charge_request(), context) for _ in range(12)))
    assert len({answer.payment.payment_id for answer in answers}) == 1
    listed = store.page(order_id="ord-1", customer_id="", before=None, limit=50)[0]
    assert [payment.payment_id for payment in listed] == [answers[0].payment.payment_id]


async def test_concurrent_charges_at_two_instances_make_one_payment(
    store: PaymentStore, tmp_path: Path, context: Any
) -> None:
    other_store = PaymentStore(tmp_path / "payment.db")
    one = make_servicer(store, settings=PaymentSettings(delay_ms=5), sleep=asyncio.sleep)
    two = make_servicer(other_store, settings=PaymentSettings(delay_ms=5), sleep=asyncio.sleep)
    try:
        answers = await asyncio.gather(
            *((one if n % 2 else two).Charge(charge_request("shared"), context) for n in range(10))
        )
    finally:
        other_store.close()
    assert len({answer.payment.payment_id for answer in answers}) == 1


async def test_a_key_reused_with_another_amount_or_order_is_invalid(
    servicer: PaymentServicer, context: Any
) -> None:
    await servicer.Charge(charge_request(), context)
    for other in (charge_request(units=11), charge_request(order_id="ord-2")):
        with pytest.raises(InvalidArgument) as error:
            await servicer.Charge(other, context)
        assert [v.field for v in error.value.violations] == ["idempotency_key"]


async def test_a_charge_without_an_amount_is_invalid(
    servicer: PaymentServicer, context: Any
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.Charge(
            pb.ChargeRequest(order_id="ord-1", customer_id="alice", idempotency_key="k"), context
        )
    assert [v.field for v in error.value.violations] == ["amount"]


async def test_a_bad_request_is_refused_before_the_delay(store: PaymentStore, context: Any) -> None:
    sleeps = Sleeps()
    servicer = make_servicer(store, PaymentSettings(delay_ms=250), sleep=sleeps)
    bad = pb.ChargeRequest(
        order_id="ORD 1",
        customer_id="-x",
        amount=money_pb2.Money(currency_code="EURO", units=1),
        idempotency_key="",
    )
    with pytest.raises(InvalidArgument) as error:
        await servicer.Charge(bad, context)
    assert [v.field for v in error.value.violations] == [
        "order_id",
        "customer_id",
        "amount.currency_code",
        "idempotency_key",
    ]
    assert sleeps.waits == []
    payment = (await servicer.Charge(charge_request(), context)).payment
    await servicer.Refund(
        pb.RefundRequest(payment_id=payment.payment_id, idempotency_key="r"), context
    )
    assert sleeps.waits == [0.25, 0.25]


async def test_a_listed_customer_is_declined_and_stays_declined(
    store: PaymentStore, context: Any
) -> None:
    declining = make_servicer(
        store, PaymentSettings.model_validate({"decline": {"customers": ["mallory"]}})
    )
    with pytest.raises(FailedPrecondition) as error:
        await declining.Charge(charge_request(customer="mallory"), context)
    [violation] = error.value.violations
    assert (violation.type, violation.subject) == (PAYMENT_DECLINED, "mallory")
    assert (await declining.Charge(charge_request("other"), context)).payment.customer_id == "alice"
    # Restarted without the decline knob: the declined key is still declined.
    lenient = make_servicer(store)
    with pytest.raises(FailedPrecondition):
        await lenient.Charge(charge_request(customer="mallory"), context)
    assert (await lenient.Charge(charge_request("new", customer="mallory"), context)).payment


async def test_a_share_of_one_declines_every_charge(store: PaymentStore, context: Any) -> None:
    servicer = make_servicer(store, PaymentSettings.model_validate({"decline": {"share": 1}}))
    for n in range(5):
        with pytest.raises(FailedPrecondition):
            await servicer.Charge(charge_request(f"key-{n}"), context)
    assert store.page(order_id="ord-1", customer_id="", before=None, limit=10) == ([], None)


async def test_refund_then_refund_again(servicer: PaymentServicer, context: Any) -> None:
    payment = (await servicer.Charge(charge_request(), context)).payment
    refund = pb.RefundRequest(payment_id=payment.payment_id, idempotency_key="refund-1")
    refunded = (await servicer.Refund(refund, context)).payment
    assert refunded.status == pb.PAYMENT_STATUS_REFUNDED
    assert refunded.refund_time.ToNanoseconds() > payment.create_time.ToNanoseconds()
    assert (await servicer.Refund(refund, context)).payment == refunded
    with pytest.raises(FailedPrecondition):
        await servicer.Refund(
            pb.RefundRequest(payment_id=payment.payment_id, idempotency_key="refund-2"), context
        )


async def test_an_unknown_payment_is_not_found(servicer: PaymentServicer, context: Any) -> None:
    with pytest.raises(NotFound) as error:
        await servicer.GetPayment(pb.GetPaymentRequest(payment_id="pay-none"), context)
    assert (error.value.resource_type, error.value.name) == (PAYMENT, "pay-none")
    with pytest.raises(NotFound):
        await servicer.Refund(pb.RefundRequest(payment_id="pay-none", idempotency_key="r"), context)


@pytest.mark.parametrize("payment_id", ["", "PAY-1", "p" * 20_000])
async def test_a_malformed_payment_id_is_invalid(
    servicer: PaymentServicer, context: Any, payment_id: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await servicer.GetPayment(pb.GetPaymentRequest(payment_id=payment_id), context)
    assert [v.field for v in error.value.violations] == ["payment_id"]


async def test_an_orders_payments_are_listed_in_pages(
    servicer: PaymentServicer, context: Any
) -> None:
    made = [(await servicer.Charge(charge_request(f"k{n}"), context)).payment for n in range(3)]
    first = await servicer.ListPayments(
        pb.ListPaymentsRequest(order_id="ord-1", page_size=2), context
    )
    assert list(first.payments) == made[::-1][:2]
    rest = await servicer.ListPayments(
        pb.ListPaymentsRequest(order_id="ord-1", page_size=2, page_token=first.next_page_token),
        context,
    )
    assert (list(rest.payments), rest.next_page_token) == (made[:1], "")
    with pytest.raises(InvalidArgument):
        await servicer.ListPayments(pb.ListPaymentsRequest(), context)


# -- through the edge ----------------------------------------------------------------------


def edge(user: str | None) -> Any:
    return lambda _: Caller(identity="edge", user=user)


async def test_through_the_edge_a_user_sees_only_their_own_payments(
    store: PaymentStore, context: Any
) -> None:
    mesh = make_servicer(store)
    bobs = (await mesh.Charge(charge_request(customer="bob"), context)).payment
    alice = make_servicer(store, caller_of=edge("alice"))
    with pytest.raises(NotFound):
        await alice.GetPayment(pb.GetPaymentRequest(payment_id=bobs.payment_id), context)
    with pytest.raises(NotFound):
        await alice.Refund(
            pb.RefundRequest(payment_id=bobs.payment_id, idempotency_key="r"), context
        )
    listed = await alice.ListPayments(pb.ListPaymentsRequest(order_id="ord-1"), context)
    assert list(listed.payments) == []
    own = (await alice.Charge(charge_request("k2", customer="bob"), context)).payment
    assert own.customer_id == "alice"  # the body's customer is ignored


async def test_through_the_edge_without_a_user_is_unauthenticated(
    store: PaymentStore, context: Any
) -> None:
    anonymous = make_servicer(store, caller_of=edge(None))
    with pytest.raises(Unauthenticated):
        await anonymous.Charge(charge_request(), context)
    with pytest.raises(Unauthenticated):
        await anonymous.GetPayment(pb.GetPaymentRequest(payment_id="pay-1"), context)
    assert store.page(order_id="ord-1", customer_id="", before=None, limit=10) == ([], None)
