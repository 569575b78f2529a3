"""Stock rules: ids, adjustments, reservations and their idempotency. No I/O, no gRPC.

The store reads rows inside a transaction, asks these functions what the new state is
(or which problem to raise), and writes the answer back in the same transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mesh.problems import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
)
from services.common.ids import RESOURCE_ID
from services.common.items import item_violations

__all__ = [
    "MAX_QUANTITY",
    "MAX_REASON",
    "PRODUCT",
    "RESERVATION",
    "STOCK",
    "Reservation",
    "ReservationItem",
    "ReservationState",
    "StockLevel",
    "adjusted",
    "released",
    "require_order_id",
    "reserved",
    "same_items",
    "validate_adjustment",
    "validate_product_id",
    "validate_reservation",
]

RESERVATION = "shop.inventory.v1.Reservation"
"""Resource type named in NOT_FOUND and ALREADY_EXISTS details."""

PRODUCT = "shop.product.v1.Product"
"""Resource type named in NOT_FOUND details: a product inventory has not learnt of."""

STOCK = "STOCK"
"""PreconditionViolation type for a product whose stock does not allow the request."""

MAX_REASON = 200
MAX_QUANTITY = 2**63 - 1
"""Stock columns are SQLite (signed 64-bit) integers."""


class ReservationState(enum.Enum):
    """Whether a reservation still holds its units."""

    ACTIVE = 1
    RELEASED = 2


@dataclass(frozen=True)
class StockLevel:
    """Units of one product on hand and held by active reservations."""

    product_id: str
    on_hand: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True)
class ReservationItem:
    """A quantity of one product."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    """The units held for one order."""

    order_id: str
    items: tuple[ReservationItem, ...]
    state: ReservationState


def validate_product_id(product_id: str) -> str:
    """A product id as the catalogue allows them.

    Raises:
        InvalidArgument: on field `product_id`.
    """
    return RESOURCE_ID.check(product_id, "product_id")


def require_order_id(order_id: str) -> str:
    """The order id to look up, if well formed (an unknown one is then simply not found).

    Raises:
        InvalidArgument: on field `order_id`.
    """
    return RESOURCE_ID.check(order_id, "order_id")


def validate_adjustment(product_id: str, delta: int, reason: str) -> None:
    """Check an AdjustStock request.

    Raises:
        InvalidArgument: listing every bad field.
    """
    found = RESOURCE_ID.violations(product_id, "product_id")
    if delta == 0:
        found.append(FieldViolation("delta", "must not be zero"))
    if len(reason) > MAX_REASON:
        found.append(FieldViolation("reason", f"must be at most {MAX_REASON} characters"))
    if found:
        raise InvalidArgument(found)


def adjusted(level: StockLevel, delta: int) -> StockLevel:
    """`level` with `delta` units more on hand.

    Raises:
        FailedPrecondition: on hand would drop below the units reserved (type STOCK).
        InvalidArgument: on hand would exceed what the store can hold.
    """
    on_hand = level.on_hand + delta
    if on_hand < level.reserved:
        raise FailedPrecondition(
            f"cannot remove {-delta} units of {level.product_id!r}",
            [
                PreconditionViolation(
                    STOCK,
                    level.product_id,
                    f"on hand {level.on_hand}, reserved {level.reserved}, delta {delta}",
                )
            ],
        )
    if on_hand > MAX_QUANTITY:
        raise InvalidArgument([FieldViolation("delta", f"on hand would exceed {MAX_QUANTITY}")])
    return StockLevel(level.product_id, on_hand=on_hand, reserved=level.reserved)


def validate_reservation(order_id: str, items: Sequence[ReservationItem]) -> None:
    """Check a ReserveStock request: an order id, and items as services.common.items
    allows them (1 to 100, each product once with a positive quantity).

    Raises:
        InvalidArgument: listing every bad field (`items[1].product_id`, ...).
    """
    found = RESOURCE_ID.violations(order_id, "order_id") + item_violations(items)
    if found:
        raise InvalidArgument(found)


def same_items(existing: Reservation, items: Sequence[ReservationItem]) -> Reservation:
    """The existing reservation when a repeated ReserveStock asks for the same items, in
    any order: this is what makes ReserveStock idempotent by order id.

    Raises:
        AlreadyExists: the order id holds a reservation of other items.
    """
    if sorted(existing.items, key=_by_product) != sorted(items, key=_by_product):
        raise AlreadyExists(
            RESERVATION, existing.order_id, "the order holds a reservation of other items"
        )
    return existing


def reserved(
    levels: Mapping[str, StockLevel], items: Sequence[ReservationItem]
) -> list[StockLevel]:
    """The new levels after holding every item, all or nothing. A product missing from
    `levels` has no stock.

    Raises:
        FailedPrecondition: listing every product that is short (type STOCK).
    """
    short = []
    after = []
    for item in items:
        level = levels.get(item.product_id, StockLevel(item.product_id))
        if item.quantity > level.available:
            short.append(
                PreconditionViolation(
                    STOCK,
                    item.product_id,
                    f"requested {item.quantity}, available {level.available}",
                )
            )
        else:
            after.append(
                StockLevel(
                    level.product_id, on_hand=level.on_hand, reserved=level.reserved + item.quantity
                )
            )
    if short:
        raise FailedPrecondition("not enough stock", short)
    return after


def released(levels: Mapping[str, StockLevel], reservation: Reservation) -> list[StockLevel]:
    """The new levels after an active reservation gives its units back."""
    after = []
    for item in reservation.items:
        level = levels.get(item.product_id, StockLevel(item.product_id))
        after.append(
            StockLevel(
                level.product_id, on_hand=level.on_hand, reserved=level.reserved - item.quantity
            )
        )
    return after


def _by_product(item: ReservationItem) -> str:
    return item.product_id
