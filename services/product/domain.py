"""Catalogue rules: product ids, names, prices and paging. No I/O and no gRPC.

Every check reports all the bad fields of a request at once, as field violations whose
paths follow the proto (`product.price.currency_code`), so a caller can fix everything
in one round trip.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from mesh import paging
from mesh.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from mesh.problems import FieldViolation, InvalidArgument

__all__ = [
    "DEFAULT_PAGE_SIZE",
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
]

PRODUCT = "shop.product.v1.Product"
"""Resource type named in NOT_FOUND and ALREADY_EXISTS details."""

MAX_NAME = 200
MAX_DESCRIPTION = 2000
NANOS_PER_UNIT = 1_000_000_000

_PRODUCT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_PAGE_KIND = "product"


@dataclass(frozen=True)
class Money:
    """An amount of one currency, shaped like google.type.Money."""

    currency_code: str
    units: int
    nanos: int

    def violations(self, field: str) -> list[FieldViolation]:
        """What is wrong with this amount as a price: code, nanos range and sign, positivity."""
        found = []
        if not _CURRENCY.fullmatch(self.currency_code):
            found.append(
                FieldViolation(f"{field}.currency_code", "must be three upper-case letters")
            )
        if not -NANOS_PER_UNIT < self.nanos < NANOS_PER_UNIT:
            found.append(
                FieldViolation(f"{field}.nanos", "must be between -999999999 and 999999999")
            )
        elif (self.units > 0 and self.nanos < 0) or (self.units < 0 and self.nanos > 0):
            found.append(FieldViolation(f"{field}.nanos", "must have the same sign as units"))
        elif self.units * NANOS_PER_UNIT + self.nanos <= 0:
            found.append(FieldViolation(field, "must be positive"))
        return found


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


def require_product_id(product_id: str, field: str = "product_id") -> str:
    """The id to look up; only emptiness is an error, an unknown id is simply not found."""
    if not product_id:
        raise InvalidArgument([FieldViolation(field, "required")])
    return product_id


def new_product(*, product_id: str, name: str, description: str, price: Money | None) -> Product:
    """Validate a product to create, assigning an id if `product_id` is empty.

    Raises:
        InvalidArgument: listing every bad field, with paths under `product.`.
    """
    found = []
    if product_id and not _PRODUCT_ID.fullmatch(product_id):
        found.append(
            FieldViolation(
                "product.product_id",
                "must be 1 to 64 lowercase letters, digits or dashes, not starting with a dash",
            )
        )
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
        found.extend(price.violations("product.price"))
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
    return _PRODUCT_ID.fullmatch(cursor) is not None
