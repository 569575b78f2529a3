"""Notification rules without I/O: which events tell whom what, money as people read
it, and the validation of list and watch requests."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from google.type import money_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events

from mesh.problems import InvalidArgument
from services.notification import domain
from services.notification.domain import MAX_TEXT, Draft


def usd(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", units=units, nanos=nanos)


def compose(message: Message) -> Draft | None:
    return domain.compose(message.DESCRIPTOR.full_name, message.SerializeToString())


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [violation.field for violation in error.value.violations]


def test_a_registered_user_is_welcomed_by_display_name() -> None:
    registered = user_events.UserRegistered(
        user_id="usr-1", username="ada", email="ada@example.com", display_name="Ada L."
    )
    assert compose(registered) == Draft("usr-1", "Welcome, Ada L.")


def test_a_user_without_a_display_name_is_welcomed_by_username() -> None:
    # What a payload of UserRegistered's first schema (field 4 `name`) parses as.
    old = user_events.UserRegisteredSchema1(user_id="usr-2", username="grace", name="G")
    assert domain.compose("shop.user.v1.UserRegistered", old.SerializeToString()) == Draft(
        "usr-2", "Welcome, grace"
    )


def test_order_outcomes_go_to_the_orders_customer() -> None:
    confirmed = order_events.OrderConfirmed(
        order_id="ord-1", customer_id="usr-1", total=usd(24, 500_000_000), payment_id="pay-1"
    )
    assert compose(confirmed) == Draft("usr-1", "Order ord-1 confirmed: 24.50 USD")
    cancelled = order_events.OrderCancelled(
        order_id="ord-2", customer_id="ada", total=usd(3), reason="out of stock"
    )
    assert compose(cancelled) == Draft("ada", "Order ord-2 was cancelled: out of stock")


def test_a_refund_tells_its_customer_the_amount() -> None:
    refunded = payment_events.PaymentRefunded(
        payment_id="pay-1", order_id="ord-1", customer_id="usr-1", amount=usd(12)
    )
    assert compose(refunded) == Draft("usr-1", "Refunded 12.00 USD for order ord-1")


@pytest.mark.parametrize(
    "message",
    [
        order_events.OrderPlaced(order_id="ord-1", customer_id="usr-1"),
        payment_events.PaymentCaptured(payment_id="pay-1", customer_id="usr-1"),
        user_events.EmailChanged(email="a@b.c"),
    ],
)
def test_events_that_tell_a_user_nothing_make_no_notification(message: Message) -> None:
    assert compose(message) is None


def test_an_unknown_type_makes_no_notification_whatever_its_payload() -> None:
    assert domain.compose("shop.order.v1.OrderShipped", b"\xff\xff") is None


def test_a_payload_that_does_not_parse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="does not parse"):
        domain.compose("shop.order.v1.OrderConfirmed", b"\xff\xff\xff")


@pytest.mark.parametrize("customer", ["", "-bad", "a" * 65, "has space"])
def test_an_event_for_no_valid_user_is_a_value_error(customer: str) -> None:
    confirmed = order_events.OrderConfirmed(order_id="ord-1", customer_id=customer, total=usd(1))
    with pytest.raises(ValueError, match="no valid user"):
        compose(confirmed)


def test_a_long_text_is_cut() -> None:
    cancelled = order_events.OrderCancelled(order_id="ord-1", customer_id="ada", reason="x" * 999)
    draft = compose(cancelled)
    assert draft is not None
    assert len(draft.text) <= MAX_TEXT
    assert draft.text.endswith("…")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (usd(24, 500_000_000), "24.50 USD"),
        (usd(0, 125_000_000), "0.125 USD"),
        (usd(-3, 0), "-3.00 USD"),
        (usd(-1, -500_000_000), "-1.50 USD"),
        (usd(7, 1), "7.000000001 USD"),
        (money_pb2.Money(units=5), "5.00"),
    ],
)
def test_money_reads_as_people_write_it(money: money_pb2.Money, text: str) -> None:
    assert domain.format_money(money) == text


def test_a_list_request_takes_defaults_and_its_own_tokens() -> None:
    page = domain.parse_list_request("usr-1", 0, "")
    assert (page.user_id, page.size, page.before) == ("usr-1", 50, None)
    token = domain.encode_page_token(41)
    assert domain.parse_list_request("usr-1", 500, token).before == 41
    assert domain.parse_list_request("usr-1", 500, token).size == 200


def test_a_bad_list_request_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_list_request("", -1, "not-a-token")
    assert fields(caught) == ["user_id", "page_size", "page_token"]
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_list_request("usr-1", 0, "b3JkZXI6MTI=")  # another service's token
    assert fields(caught) == ["page_token"]


def test_a_watch_starts_after_a_notification_id_or_from_now() -> None:
    assert domain.parse_watch_request("usr-1", "").after is None
    assert domain.parse_watch_request("usr-1", domain.notification_id(12)).after == 12


@pytest.mark.parametrize("after", ["12", "ntf-", "ntf-x", "ntf--1", "ntf-" + "9" * 19])
def test_a_watch_after_something_else_is_refused(after: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_watch_request("usr-1", after)
    assert fields(caught) == ["after"]


def test_a_watch_needs_a_valid_user() -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_watch_request("no spaces", "bad")
    assert fields(caught) == ["user_id", "after"]
