"""Order rules: request validation, pricing with exact money, the saga's steps and what
their outcomes make of an order, paging. No I/O, no gRPC.

Money (services.common.money) is added and multiplied as whole nanos, never as floats,
and turned back into units and nanos only at the end.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mesh.problems import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from services.common import paging
from services.common.ids import CUSTOMER_ID, REQUEST_ID, RESOURCE_ID
from services.common.items import MAX_ITEMS, item_violations
from services.common.money import MAX_UNITS, NANOS_PER_UNIT, Money
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "CHARGE_PAYMENT",
    "CREATE_SHIPMENT",
    "CURRENCY",
    "DEFAULT_ADDRESS",
    "DEFAULT_PAGE_SIZE",
    "FINAL_STATUSES",
    "MAX_DETAIL",
    "MAX_ITEMS",
    "MAX_PAGE_SIZE",
    "ORDER",
    "RESERVE_STOCK",
    "STEPS",
    "Address",
    "Line",
    "Money",
    "Order",
    "OrderItem",
    "OrderRequest",
    "OrderStatus",
    "Page",
    "SagaStep",
    "StepStatus",
    "encode_page_token",
    "new_order_id",
    "new_saga",
    "parse_list_request",
    "price_order",
    "request_fingerprint",
    "require_order_id",
    "validate_address",
    "validate_order_request",
]

ORDER = "shop.order.v1.Order"
"""Resource type named in NOT_FOUND details."""

CURRENCY = "CURRENCY"
"""PreconditionViolation type for an item priced in another currency than the rest."""

_PAGE_KIND = "order"


class OrderStatus(enum.Enum):
    """Where an order stands: PENDING while its saga runs, then CONFIRMED (placed, paid
    and shipped) or CANCELLED (a step failed and the done ones were undone)."""

    CONFIRMED = 1
    PENDING = 2
    CANCELLED = 3


FINAL_STATUSES = frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED})
"""Statuses an order never leaves, where a WatchOrder stream ends."""

RESERVE_STOCK = "reserve_stock"
CHARGE_PAYMENT = "charge_payment"
CREATE_SHIPMENT = "create_shipment"
STEPS = (RESERVE_STOCK, CHARGE_PAYMENT, CREATE_SHIPMENT)
"""The saga's steps, in the order they run (and are undone in reverse)."""

MAX_DETAIL = 200
"""Most characters of a step's detail and an order's failure_reason."""


class StepStatus(enum.Enum):
    """Where one saga step stands. ABANDONED: given up on while its outcome was
    unknown, so it may have happened and is undone like a DONE step (shown as FAILED)."""

    PENDING = 1
    DONE = 2
    FAILED = 3
    COMPENSATED = 4
    COMPENSATION_FAILED = 5
    ABANDONED = 6


@dataclass(frozen=True)
class SagaStep:
    """One step of an order's saga. `attempts` counts the tries of the step, `undo_attempts`
    those of its compensation."""

    name: str
    status: StepStatus = StepStatus.PENDING
    detail: str = ""
    attempts: int = 0
    undo_attempts: int = 0
    update_time_ns: int = 0


@dataclass(frozen=True)
class Address:
    """Where an order is shipped."""

    name: str
    street: str
    city: str
    postal_code: str
    country: str


DEFAULT_ADDRESS = Address("ShopMesh Demo", "1 Mesh Street", "Brussels", "1000", "BE")
"""Where an order placed without a shipping_address goes (clients older than the saga)."""


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
    address: Address = DEFAULT_ADDRESS


@dataclass(frozen=True)
class OrderItem:
    """A quantity of one product at the unit price charged."""

    product_id: str
    quantity: int
    unit_price: Money


@dataclass(frozen=True)
class Order:
    """A placed order. `request_id` is the caller's idempotency key ("" if none);
    `address` is None only for orders placed before the saga (which have no steps)."""

    order_id: str
    customer_id: str
    items: tuple[OrderItem, ...]
    total: Money
    status: OrderStatus
    create_time_ns: int
    request_id: str = ""
    address: Address | None = None
    saga: tuple[SagaStep, ...] = field(default=())
    payment_id: str = ""
    shipment_id: str = ""
    failure_reason: str = ""

    @property
    def lines(self) -> tuple[Line, ...]:
        return tuple(Line(item.product_id, item.quantity) for item in self.items)

    def step(self, name: str) -> SagaStep:
        """The saga step called `name`."""
        return next(step for step in self.saga if step.name == name)


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
    customer_id: str,
    lines: Sequence[Line],
    request_id: str,
    address: Address | None = None,
) -> OrderRequest:
    """Check a PlaceOrder request; no `address` means DEFAULT_ADDRESS.

    Raises:
        InvalidArgument: listing every bad field (`customer_id`, `items[2].quantity`,
            `shipping_address.country`, ...; the items as services.common.items checks
            them).
    """
    found = CUSTOMER_ID.violations(customer_id, "customer_id") + item_violations(lines)
    found.extend(REQUEST_ID.violations(request_id, "request_id", required=False))
    if address is not None:
        found.extend(validate_address(address, "shipping_address"))
    if found:
        raise InvalidArgument(found)
    return OrderRequest(
        customer_id=customer_id,
        lines=tuple(lines),
        request_id=request_id,
        address=DEFAULT_ADDRESS if address is None else address,
    )


_POSTAL_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,15}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_NOT_IN_A_LINE = frozenset({"Cc", "Zl", "Zp"})  # control characters, line separators
_LINES = (("name", 100), ("street", 200), ("city", 100))


def validate_address(address: Address, prefix: str) -> list[FieldViolation]:
    """What is wrong with `address` (in field `prefix`), by the shipping service's rules
    for the form of each line. Whether the carrier knows the country is its own call:
    a refusal then cancels the order."""
    found = []
    for name, limit in _LINES:
        value = getattr(address, name)
        if not value:
            found.append(FieldViolation(f"{prefix}.{name}", "required"))
        elif len(value) > limit:
            found.append(FieldViolation(f"{prefix}.{name}", f"must be at most {limit} characters"))
        elif any(unicodedata.category(char) in _NOT_IN_A_LINE for char in value):
            found.append(FieldViolation(f"{prefix}.{name}", "must be one line of text"))
    if address.postal_code and _POSTAL_CODE.fullmatch(address.postal_code) is None:
        found.append(
            FieldViolation(
                f"{prefix}.postal_code",
                "must be up to 16 letters, digits, spaces or dashes, starting with a letter"
                " or digit",
            )
        )
    if _COUNTRY.fullmatch(address.country) is None:
        found.append(
            FieldViolation(
                f"{prefix}.country", "must be an ISO 3166-1 alpha-2 country code, such as DE"
            )
        )
    return found


def new_saga(now_ns: int) -> tuple[SagaStep, ...]:
    """The steps of a saga that has not started."""
    return tuple(SagaStep(name, update_time_ns=now_ns) for name in STEPS)


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
    """The PENDING order for `request`, its saga not started, given each line's unit
    price (None: the catalogue has no such product).

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
        status=OrderStatus.PENDING,
        create_time_ns=create_time_ns,
        request_id=request.request_id,
        address=request.address,
        saga=new_saga(create_time_ns),
    )


def parse_list_request(customer_id: str, page_size: int, page_token: str) -> Page:
    """Validate a ListOrders request: an optional customer id, and paging (0 means the
    default size, larger sizes are capped).

    Raises:
        InvalidArgument: every bad field at once: a malformed `customer_id`, a negative
            `page_size`, a `page_token` this service did not issue.
    """
    found = CUSTOMER_ID.violations(customer_id, "customer_id", required=False)
    request = paging.parse_page(
        page_size, page_token, kind=_PAGE_KIND, valid_cursor=_is_seq, also=found
    )
    before = None if request.cursor is None else int(request.cursor)
    return Page(size=request.size, before=before)


def encode_page_token(cursor: int) -> str:
    """The opaque token that resumes listing with orders older than `cursor`."""
    return paging.page_token(_PAGE_KIND, str(cursor))


def _is_seq(cursor: str) -> bool:
    return cursor.isascii() and cursor.isdigit()
