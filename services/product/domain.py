"""Catalogue rules: product ids, names, prices and paging. No I/O and no gRPC.

Every check reports all the bad fields of a request at once, as field violations whose
paths follow the proto (`product.price.currency_code`), so a caller can fix everything
in one round trip.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mesh.problems import FieldViolation, InvalidArgument
from services.common import paging
from services.common.ids import RESOURCE_ID
from services.common.items import MAX_ITEMS
from services.common.money import Money
from services.common.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_BATCH",
    "MAX_PAGE_SIZE",
    "PRODUCT",
    "Money",
    "Page",
    "Product",
    "encode_page_token",
    "new_product",
    "new_product_id",
    "parse_page",
    "require_product_id",
    "require_product_ids",
]

PRODUCT = "shop.product.v1.Product"
"""Resource type named in NOT_FOUND and ALREADY_EXISTS details."""

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_BATCH = MAX_ITEMS
"""Most ids one BatchGetProducts may ask for: an order's most items."""
_PAGE_KIND = "product"


@dataclass(frozen=True)
class Product:
    """A valid catalogue entry."""

    product_id: str
    name: str
    description: str
    price: Money


@dataclass(frozen=True)
class Page:
    """One validated page request: at most `size` products after `after` (None: from the start)."""

    size: int
    after: str | None


def new_product_id() -> str:
    """An id for a product created without one: "prd-" and 12 hex digits."""
    return f"prd-{secrets.token_hex(6)}"


def require_product_id(product_id: str) -> str:
    """The id to look up, if well formed (an unknown one is then simply not found).

    Raises:
        InvalidArgument: on `product_id`.
    """
    return RESOURCE_ID.check(product_id, "product_id")


def require_product_ids(product_ids: Sequence[str]) -> list[str]:
    """The ids of a BatchGetProducts, if there are 1 to MAX_BATCH and each is well formed.

    Raises:
        InvalidArgument: on `product_ids`, or on each malformed `product_ids[i]`.
    """
    if not product_ids:
        raise InvalidArgument([FieldViolation("product_ids", "at least one id is required")])
    if len(product_ids) > MAX_BATCH:
        raise InvalidArgument([FieldViolation("product_ids", f"at most {MAX_BATCH} ids")])
    found = [
        violation
        for index, product_id in enumerate(product_ids)
        for violation in RESOURCE_ID.violations(product_id, f"product_ids[{index}]")
    ]
    if found:
        raise InvalidArgument(found)
    return list(product_ids)


def new_product(*, product_id: str, name: str, description: str, price: Money | None) -> Product:
    """Validate a product to create, assigning an id if `product_id` is empty.

    Raises:
        InvalidArgument: listing every bad field, with paths under `product.`.
    """
    found = RESOURCE_ID.violations(product_id, "product.product_id", required=False)
    if not name.strip():
        found.append(FieldViolation("product.name", "required"))
    elif len(name) > MAX_NAME:
        found.append(FieldViolation("product.name", f"must be at most {MAX_NAME} characters"))
    if len(description) > MAX_DESCRIPTION:
        found.append(
            FieldViolation("product.description", f"must be at most {MAX_DESCRIPTION} characters")
        )
    if price is None:
        found.append(FieldViolation("product.price", "required"))
    else:
        found.extend(price.price_violations("product.price"))
    if found:
        raise InvalidArgument(found)
    assert price is not None
    return Product(
        product_id=product_id or new_product_id(),
        name=name,
        description=description,
        price=price,
    )


def parse_page(page_size: int, page_token: str) -> Page:
    """Validate ListProducts paging: 0 means the default size, larger sizes are capped.

    Raises:
        InvalidArgument: a negative size or a token this service did not issue.
    """
    request = paging.parse_page(page_size, page_token, kind=_PAGE_KIND, valid_cursor=_is_product_id)
    return Page(size=request.size, after=request.cursor)


def encode_page_token(last_product_id: str) -> str:
    """The opaque token that resumes listing after `last_product_id`."""
    return paging.page_token(_PAGE_KIND, last_product_id)


def _is_product_id(cursor: str) -> bool:
    return not RESOURCE_ID.violations(cursor, "")
