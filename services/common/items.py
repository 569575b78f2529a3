"""The rule for a request's list of items (product and quantity), shared by PlaceOrder and
ReserveStock: an order's items are reserved as they are, so both accept the same lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mesh.problems import FieldViolation
from services.common.ids import RESOURCE_ID

__all__ = ["MAX_ITEMS", "Item", "item_violations"]

MAX_ITEMS = 100
"""Most items one request may hold, so that what it costs the services it reaches (one
price and one stock row each) is bounded."""


class Item(Protocol):
    """A quantity of one product, as a request carries it."""

    @property
    def product_id(self) -> str: ...

    @property
    def quantity(self) -> int: ...


def item_violations(items: Sequence[Item]) -> list[FieldViolation]:
    """What is wrong with `items`: none, or more than MAX_ITEMS (then the items are not
    looked at one by one); a malformed or repeated product id (`items[i].product_id`);
    a quantity below 1 (`items[i].quantity`)."""
    if not items:
        return [FieldViolation("items", "at least one item is required")]
    if len(items) > MAX_ITEMS:
        return [FieldViolation("items", f"at most {MAX_ITEMS} items, got {len(items)}")]
    found = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        field = f"items[{index}]"
        id_problems = RESOURCE_ID.violations(item.product_id, f"{field}.product_id")
        if not id_problems and item.product_id in first_index:
            earlier = first_index[item.product_id]
            id_problems = [FieldViolation(f"{field}.product_id", f"duplicates items[{earlier}]")]
        found.extend(id_problems)
        first_index.setdefault(item.product_id, index)
        if item.quantity < 1:
            found.append(FieldViolation(f"{field}.quantity", "must be at least 1"))
    return found
