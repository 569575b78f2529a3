"""Notification rules: which events tell a user something and what, request validation,
ids and paging. No I/O, no gRPC.

An event makes at most one notification, addressed to the user it concerns: the user
who registered, or the customer of an order or a payment (for an order placed through
the edge, the customer is the signed-in user's id). Events that tell a user nothing
(OrderPlaced, EmailChanged, ...) make none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from google.type import money_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events

from mesh.problems import FieldViolation, InvalidArgument, bounded
from services.common import paging
from services.common.ids import CUSTOMER_ID
from services.common.money import NANOS_PER_UNIT, Money

__all__ = [
    "MAX_TEXT",
    "TOPICS",
    "Draft",
    "Notification",
    "Page",
    "Watch",
    "compose",
    "encode_page_token",
    "format_money",
    "notification_id",
    "parse_list_request",
    "parse_watch_request",
]

TOPICS: tuple[str, ...] = ("user", "order", "payment")
"""The topics whose events make notifications."""

MAX_TEXT = 400
"""Characters of the longest notification text (longer ones are cut)."""

_M = TypeVar("_M", bound=Message)

_PAGE_KIND = "notification"
_ID_PREFIX = "ntf-"
_ID = re.compile(r"ntf-([0-9]{1,18})")


@dataclass(frozen=True)
class Draft:
    """A notification an event makes, before the store numbers it."""

    user_id: str
    text: str


@dataclass(frozen=True)
class Notification:
    """A stored notification: `seq` orders them (larger: later) and names it."""

    seq: int
    user_id: str
    text: str
    event_type: str
    create_time_ns: int

    @property
    def notification_id(self) -> str:
        return notification_id(self.seq)


@dataclass(frozen=True)
class Page:
    """One validated ListNotifications request: at most `size` of `user_id`'s
    notifications older than cursor `before` (None: from the newest)."""

    user_id: str
    size: int
    before: int | None


@dataclass(frozen=True)
class Watch:
    """One validated WatchNotifications request: `user_id`'s notifications after seq
    `after` (None: only those made from now on)."""

    user_id: str
    after: int | None


def _welcome(data: bytes) -> Draft:
    message = _parsed(user_events.UserRegistered(), data)
    # A payload of UserRegistered's first schema parses with an empty display name
    # (its `name` field is reserved now): greet the username then, as the user service
    # shows such a user.
    name = message.display_name or message.username
    return Draft(message.user_id, f"Welcome, {bounded(name, 100)}")


def _confirmed(data: bytes) -> Draft:
    message = _parsed(order_events.OrderConfirmed(), data)
    total = format_money(message.total)
    return Draft(message.customer_id, f"Order {message.order_id} confirmed: {total}")


def _cancelled(data: bytes) -> Draft:
    message = _parsed(order_events.OrderCancelled(), data)
    reason = bounded(message.reason, 200)
    return Draft(message.customer_id, f"Order {message.order_id} was cancelled: {reason}")


def _refunded(data: bytes) -> Draft:
    message = _parsed(payment_events.PaymentRefunded(), data)
    amount = format_money(message.amount)
    return Draft(message.customer_id, f"Refunded {amount} for order {message.order_id}")


_COMPOSERS: dict[str, Callable[[bytes], Draft]] = {
    user_events.UserRegistered.DESCRIPTOR.full_name: _welcome,
    order_events.OrderConfirmed.DESCRIPTOR.full_name: _confirmed,
    order_events.OrderCancelled.DESCRIPTOR.full_name: _cancelled,
    payment_events.PaymentRefunded.DESCRIPTOR.full_name: _refunded,
}


def _parsed(message: _M, data: bytes) -> _M:
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        name = message.DESCRIPTOR.full_name
        raise ValueError(f"a {name} payload that does not parse: {error}") from None
    return message


def compose(event_type: str, data: bytes) -> Draft | None:
    """The notification an event of `event_type` with payload `data` makes, or None if
    that type tells a user nothing.

    Raises:
        ValueError: the payload does not parse as its type, or names no valid user.
    """
    compose_one = _COMPOSERS.get(event_type)
    if compose_one is None:
        return None
    draft = compose_one(data)
    if CUSTOMER_ID.violations(draft.user_id, "user_id"):
        raise ValueError(f"a {event_type} for no valid user: {draft.user_id!r:.80}")
    return Draft(draft.user_id, bounded(draft.text, MAX_TEXT))


def format_money(money: money_pb2.Money) -> str:
    """An amount as people read it: "24.50 USD", "0.125 EUR", "-3.00 USD" (at least two
    decimals, more only when the amount has them)."""
    amount = Money.from_proto(money).to_nanos()
    whole, fraction = divmod(abs(amount), NANOS_PER_UNIT)
    decimals = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole}.{decimals} {money.currency_code}".rstrip()


def notification_id(seq: int) -> str:
    """The id of the notification numbered `seq`."""
    return f"{_ID_PREFIX}{seq}"


def parse_list_request(user_id: str, page_size: int, page_token: str) -> Page:
    """Validate a ListNotifications request: a required user id, and paging (0 means
    the default size, larger sizes are capped).

    Raises:
        InvalidArgument: every bad field at once (`user_id`, `page_size`, `page_token`).
    """
    found = CUSTOMER_ID.violations(user_id, "user_id")
    request = paging.parse_page(
        page_size, page_token, kind=_PAGE_KIND, valid_cursor=_is_seq, also=found
    )
    before = None if request.cursor is None else int(request.cursor)
    return Page(user_id=user_id, size=request.size, before=before)


def parse_watch_request(user_id: str, after: str) -> Watch:
    """Validate a WatchNotifications request: a required user id, and an optional
    notification id to start after.

    Raises:
        InvalidArgument: every bad field at once (`user_id`, `after`).
    """
    found = CUSTOMER_ID.violations(user_id, "user_id")
    seq = None
    if after:
        match = _ID.fullmatch(after)
        if match is None:
            found.append(FieldViolation("after", "must be a notification_id, such as ntf-12"))
        else:
            seq = int(match.group(1))
    if found:
        raise InvalidArgument(found)
    return Watch(user_id=user_id, after=seq)


def encode_page_token(cursor: int) -> str:
    """The opaque token that resumes listing with notifications older than `cursor`."""
    return paging.page_token(_PAGE_KIND, str(cursor))


def _is_seq(cursor: str) -> bool:
    return cursor.isascii() and cursor.isdigit() and len(cursor) <= 18
