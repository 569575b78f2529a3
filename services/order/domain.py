"""Order rules: request validation, pricing with exact money, paging. No I/O, no gRPC.

Money (services.common.money) is added and multiplied as whole nanos, never as floats,
and turned back into units and nanos only at the end.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mesh.problems import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from services.common import paging
from services.common.ids import CUSTOMER_ID, REQUEST_ID, RESOURCE_ID
from services.common.items import MAX_ITEMS, item_violations
from services.common.money import MAX_UNITS, NANOS_PER_UNIT, Money
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "CURRENCY",
    "DEFAULT_PAGE_SIZE",
    "MAX_ITEMS",
    "MAX_PAGE_SIZE",
    "ORDER",
    "Line",
    "Money",
    "Order",
    "OrderItem",
    "OrderRequest",
    "OrderStatus",
    "Page",
    "encode_page_token",
    "new_order_id",
    "parse_list_request",
    "price_order",
    "request_fingerprint",
    "require_order_id",
    "validate_order_request",
]

ORDER = "shop.order.v1.Order"
"""Resource type named in NOT_FOUND details."""

CURRENCY = "CURRENCY"
"""PreconditionViolation type for an item priced in another currency than the rest."""

_PAGE_KIND = "order"


class OrderStatus(enum.Enum):
    """Where an order stands."""

    CONFIRMED = 1


FINAL_STATUSES: frozenset[OrderStatus] = frozenset()
"""Statuses an order never leaves, where a WatchOrder stream ends. None yet: an order
is only ever CONFIRMED so far, and the order's later steps (shipping, cancelling) are to
move on from there."""


@dataclass(frozen=True)
class Line:
    """A product and quantity as requested, before pricing."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class OrderRequest:
    """A validated PlaceOrder request."""

    customer_id: str
    lines: tuple[Line, ...]
    request_id: str


@dataclass(frozen=True)
class OrderItem:
    """A quantity of one product at the unit price charged."""

    product_id: str
    quantity: int
    unit_price: Money


@dataclass(frozen=True)
class Order:
    """A placed order. `request_id` is the caller's idempotency key ("" if none)."""

    order_id: str
    customer_id: str
    items: tuple[OrderItem, ...]
    total: Money
    status: OrderStatus
    create_time_ns: int
    request_id: str = ""


@dataclass(frozen=True)
class Page:
    """One validated page request: at most `size` orders older than cursor `before`
    (None: from the newest)."""

    size: int
    before: int | None


def new_order_id() -> str:
    """A fresh order id: "ord-" and 16 hex digits."""
    return f"ord-{secrets.token_hex(8)}"


def require_order_id(order_id: str) -> str:
    """The id to look up, if well formed (an unknown one is then simply not found).

    Raises:
        InvalidArgument: on `order_id`.
    """
    return RESOURCE_ID.check(order_id, "order_id")


def validate_order_request(
    customer_id: str, lines: Sequence[Line], request_id: str
) -> OrderRequest:
    """Check a PlaceOrder request.

    Raises:
        InvalidArgument: listing every bad field (`customer_id`, `items[2].quantity`, ...;
            the items as services.common.items checks them).
    """
    found = CUSTOMER_ID.violations(customer_id, "customer_id") + item_violations(lines)
    found.extend(REQUEST_ID.violations(request_id, "request_id", required=False))
    if found:
        raise InvalidArgument(found)
    return OrderRequest(customer_id=customer_id, lines=tuple(lines), request_id=request_id)


def request_fingerprint(lines: Iterable[Line | OrderItem]) -> str:
    """What makes two PlaceOrder requests of one customer the same request: the same
    quantities of the same products, in any order."""
    canonical = "\n".join(sorted(f"{line.product_id} {line.quantity}" for line in lines))
    return hashlib.sha256(canonical.encode()).hexdigest()


def price_order(
    request: OrderRequest,
    unit_prices: Sequence[Money | None],
    *,
    order_id: str,
    create_time_ns: int,
) -> Order:
    """The confirmed order for `request`, given each line's unit price (None: the
    catalogue has no such product).

    Raises:
        InvalidArgument: unknown products (on `items[i].product_id`), or a total too
            large for google.type.Money (on `items`).
        FailedPrecondition: the products are priced in more than one currency; each
            item not in the first item's currency is listed (type CURRENCY).
    """
    unknown = [
        FieldViolation(f"items[{index}].product_id", "no such product")
        for index, price in enumerate(unit_prices)
        if price is None
    ]
    if unknown:
        raise InvalidArgument(unknown)
    prices = [price for price in unit_prices if price is not None]
    currency = prices[0].currency_code
    mixed = [
        PreconditionViolation(
            CURRENCY, line.product_id, f"priced in {price.currency_code}, not {currency}"
        )
        for line, price in zip(request.lines, prices, strict=True)
        if price.currency_code != currency
    ]
    if mixed:
        raise FailedPrecondition("the items are priced in more than one currency", mixed)
    total = sum(
        line.quantity * price.to_nanos() for line, price in zip(request.lines, prices, strict=True)
    )
    if total // NANOS_PER_UNIT > MAX_UNITS:
        raise InvalidArgument([FieldViolation("items", "the order total is too large")])
    return Order(
        order_id=order_id,
        customer_id=request.customer_id,
        items=tuple(
            OrderItem(line.product_id, line.quantity, price)
            for line, price in zip(request.lines, prices, strict=True)
        ),
        total=Money.from_nanos(currency, total),
        status=OrderStatus.CONFIRMED,
        create_time_ns=create_time_ns,
        request_id=request.request_id,
    )


def parse_list_request(customer_id: str, page_size: int, page_token: str) -> Page:
    """Validate a ListOrders request: an optional customer id, and paging (0 means the
    default size, larger sizes are capped).

    Raises:
        InvalidArgument: every bad field at once: a malformed `customer_id`, a negative
            `page_size`, a `page_token` this service did not issue.
    """
    found = CUSTOMER_ID.violations(customer_id, "customer_id", required=False)
    try:
        request = paging.parse_page(page_size, page_token, kind=_PAGE_KIND, valid_cursor=_is_seq)
    except InvalidArgument as error:
        raise InvalidArgument([*found, *error.violations]) from None
    if found:
        raise InvalidArgument(found)
    before = None if request.cursor is None else int(request.cursor)
    return Page(size=request.size, before=before)


def encode_page_token(cursor: int) -> str:
    """The opaque token that resumes listing with orders older than `cursor`."""
    return paging.page_token(_PAGE_KIND, str(cursor))


def _is_seq(cursor: str) -> bool:
    return cursor.isascii() and cursor.isdigit()
