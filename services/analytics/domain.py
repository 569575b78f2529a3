"""What each event counts for, and the totals the counts add up to. No I/O.

`tally(event)` reads one event of the topics analytics follows and says what it adds:
a `Count` (one more of a counter, with its label) or an `OrderValue` (one observation
of the order value histogram). Events of other types add nothing.

- shop.user.v1.UserRegistered: user_registrations.
- shop.payment.v1.PaymentCaptured: payment_success.
- shop.order.v1.OrderCancelled: cart_abandonment, by the step that failed (an order
  that did not go through: its cart was abandoned).
- shop.order.v1.OrderPlaced: its total, if in US dollars, in order_value_dollars;
  otherwise one more orders_not_in_dollars of its currency. There are no exchange rates
  here, and a histogram of mixed currencies would mean nothing.

Labels come from other services' events, so they are bounded: a step or a currency this
version does not expect is counted under "other", never as a new label value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events

from mesh.events import Event
from services.common.money import NANOS_PER_UNIT, Money

__all__ = [
    "CART_ABANDONMENT",
    "CONSUMER",
    "DOLLARS",
    "ORDERS_NOT_IN_DOLLARS",
    "ORDER_VALUE_BUCKETS",
    "OTHER",
    "PAYMENT_SUCCESS",
    "SAGA_STEPS",
    "TOPICS",
    "USER_REGISTRATIONS",
    "Change",
    "Count",
    "OrderValue",
    "OrderValues",
    "Totals",
    "bucket_of",
    "tally",
]

CONSUMER = "analytics"
"""The consumer name every instance subscribes with (they share its events)."""
TOPICS = ("user", "order", "payment")

USER_REGISTRATIONS = "user_registrations"
PAYMENT_SUCCESS = "payment_success"
CART_ABANDONMENT = "cart_abandonment"
ORDERS_NOT_IN_DOLLARS = "orders_not_in_dollars"
"""Counter names, as stored (the exported metric adds `_total`)."""

DOLLARS = "USD"
ORDER_VALUE_BUCKETS: tuple[int, ...] = (10, 25, 50, 100, 250, 500, 1000)
"""Upper bounds of order_value_dollars, in whole dollars (inclusive), ascending."""

SAGA_STEPS = frozenset({"reserve_stock", "charge_payment", "create_shipment"})
"""The failed_step values of OrderCancelled that are labels of their own."""
OTHER = "other"

_M = TypeVar("_M", bound=Message)
_CURRENCY = re.compile(r"[A-Z]{3}")
_USER_REGISTERED = user_events.UserRegistered.DESCRIPTOR.full_name
_PAYMENT_CAPTURED = payment_events.PaymentCaptured.DESCRIPTOR.full_name
_ORDER_PLACED = order_events.OrderPlaced.DESCRIPTOR.full_name
_ORDER_CANCELLED = order_events.OrderCancelled.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Count:
    """One more of counter `metric` with label value `label` ("" for no label)."""

    metric: str
    label: str = ""


@dataclass(frozen=True)
class OrderValue:
    """One order total in US dollars, as whole nanos of a dollar (exact)."""

    nanos: int

    @property
    def dollars(self) -> float:
        return self.nanos / NANOS_PER_UNIT


Change = Count | OrderValue


@dataclass(frozen=True)
class OrderValues:
    """The order value histogram: orders at most each bound of ORDER_VALUE_BUCKETS
    (cumulative, in that order), all orders, and the sum of their totals in dollars."""

    buckets: tuple[tuple[int, int], ...]
    count: int
    sum_dollars: float


@dataclass(frozen=True)
class Totals:
    """Every count, as of one moment."""

    user_registrations: int
    payment_successes: int
    cart_abandonments: Mapping[str, int]
    """By failed step."""
    order_values: OrderValues
    orders_not_in_dollars: Mapping[str, int]
    """By currency code."""
    events_counted: int
    """Events received, whether or not they counted towards a metric."""


def tally(event: Event) -> list[Change]:
    """What `event` adds to the counts (nothing for a type analytics does not count).

    Raises:
        ValueError: its payload is not the message its type names.
    """
    if event.type == _USER_REGISTERED:
        return [Count(USER_REGISTRATIONS)]
    if event.type == _PAYMENT_CAPTURED:
        return [Count(PAYMENT_SUCCESS)]
    if event.type == _ORDER_CANCELLED:
        cancelled = _parse(order_events.OrderCancelled(), event)
        step = cancelled.failed_step if cancelled.failed_step in SAGA_STEPS else OTHER
        return [Count(CART_ABANDONMENT, step)]
    if event.type == _ORDER_PLACED:
        placed = _parse(order_events.OrderPlaced(), event)
        total = Money.from_proto(placed.total)
        if total.currency_code == DOLLARS:
            return [OrderValue(total.to_nanos())]
        currency = total.currency_code if _CURRENCY.fullmatch(total.currency_code) else OTHER
        return [Count(ORDERS_NOT_IN_DOLLARS, currency)]
    return []


def bucket_of(nanos: int) -> int | None:
    """The smallest bound of ORDER_VALUE_BUCKETS an amount is at most; None above all."""
    for bound in ORDER_VALUE_BUCKETS:
        if nanos <= bound * NANOS_PER_UNIT:
            return bound
    return None


def _parse(message: _M, event: Event) -> _M:
    try:
        message.ParseFromString(event.data)
    except DecodeError as error:
        raise ValueError(f"{event.type} payload does not parse: {error}") from error
    return message
