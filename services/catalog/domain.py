"""Catalog rules: what an item is, which searches are valid, and the page tokens that
resume a search. No I/O and no gRPC.

A search is ordered by name, case-insensitively (the name casefolded: its `sort_key`),
then by product id, and pages by keyset: a page token holds the sort key and id of the
last item given, so a page never repeats or skips an item that stays in place, however
the read model changes between pages. A token also holds a digest of the filters it
was issued for: going on with other filters would give a page of another search, so
that is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from mesh.problems import FieldViolation, InvalidArgument
from services.common.ids import RESOURCE_ID
from services.common.money import NANOS_PER_UNIT, Money

__all__ = [
    "CATALOG_ITEM",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_PAGE_TOKEN",
    "MAX_QUERY",
    "CatalogItem",
    "Cursor",
    "Search",
    "SearchFilter",
    "encode_page_token",
    "parse_search",
    "require_product_id",
    "sort_key",
]

CATALOG_ITEM = "shop.catalog.v1.CatalogItem"
"""Resource type named in NOT_FOUND details."""

DEFAULT_PAGE_SIZE = 20
"""Items on a page when a search asks for 0 (unset)."""
MAX_PAGE_SIZE = 100
"""Most items one page may ask for; more is INVALID_ARGUMENT."""
MAX_QUERY = 200
"""Characters of the longest query."""
MAX_PAGE_TOKEN = 4096
"""Characters of the longest token accepted; longer ones are refused undecoded. The
longest issued is within it: a name of product's 200 characters casefolds to at most
600, of at most 4 bytes each in UTF-8, and base64 makes 4 characters of 3 bytes."""

_TOKEN_KIND = "catalog"
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class CatalogItem:
    """One product as the catalog shows it: what product says of it, and the units
    inventory last said are available (0 until it says)."""

    product_id: str
    name: str
    description: str
    price: Money
    available: int = 0

    @property
    def in_stock(self) -> bool:
        return self.available > 0


@dataclass(frozen=True)
class SearchFilter:
    """What a search matches: names holding every word of `words` (casefolded), prices
    within the bounds given (both in one currency), and only items in stock if
    `in_stock_only`."""

    words: tuple[str, ...] = ()
    min_price: Money | None = None
    max_price: Money | None = None
    in_stock_only: bool = False

    @property
    def currency(self) -> str | None:
        """The currency an item's price must be in, if a price bound is set."""
        bound = self.min_price or self.max_price
        return bound.currency_code if bound else None

    def digest(self) -> str:
        """A short digest that differs between any two filters."""
        bounds = [
            (bound.currency_code, bound.to_nanos()) if bound else None
            for bound in (self.min_price, self.max_price)
        ]
        text = json.dumps([list(self.words), bounds, self.in_stock_only])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cursor:
    """A place in the search order: just after the item with this sort key and id."""

    sort_key: str
    product_id: str


@dataclass(frozen=True)
class Search:
    """One validated SearchCatalog: at most `size` items matching `filter`, after
    `after` (None: from the start)."""

    filter: SearchFilter
    size: int
    after: Cursor | None


def sort_key(name: str) -> str:
    """What items are ordered and matched by: the name, casefolded."""
    return name.casefold()


def require_product_id(product_id: str) -> str:
    """The id to look up, if well formed (an unknown one is then simply not found).

    Raises:
        InvalidArgument: on `product_id`.
    """
    return RESOURCE_ID.check(product_id, "product_id")


def parse_search(
    *,
    query: str,
    min_price: Money | None,
    max_price: Money | None,
    in_stock_only: bool,
    page_size: int,
    page_token: str,
) -> Search:
    """Validate a SearchCatalog request.

    Raises:
        InvalidArgument: listing every bad field: `query` (too long), `min_price` and
            `max_price` (malformed, negative, max below min, two currencies),
            `page_size` (negative or above MAX_PAGE_SIZE), `page_token` (not issued
            by this service, or for other filters).
    """
    found: list[FieldViolation] = []
    if len(query) > MAX_QUERY:
        found.append(FieldViolation("query", f"must be at most {MAX_QUERY} characters"))
    bounds = _bound_violations(min_price, "min_price") + _bound_violations(max_price, "max_price")
    found += bounds
    if not bounds and min_price and max_price:
        found += _range_violations(min_price, max_price)
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        found.append(FieldViolation("page_size", f"must be between 0 and {MAX_PAGE_SIZE}"))
    search_filter = SearchFilter(
        words=tuple(sort_key(query).split()),
        min_price=min_price,
        max_price=max_price,
        in_stock_only=in_stock_only,
    )
    after = None
    if page_token:
        after, problem = _decode_page_token(page_token, search_filter)
        if problem:
            found.append(FieldViolation("page_token", problem))
    if found:
        raise InvalidArgument(found)
    return Search(filter=search_filter, size=page_size or DEFAULT_PAGE_SIZE, after=after)


def encode_page_token(search_filter: SearchFilter, last: Cursor) -> str:
    """The opaque token that resumes the search of `search_filter` after `last`."""
    cursor = [search_filter.digest(), last.sort_key, last.product_id]
    payload = json.dumps(cursor, ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(f"{_TOKEN_KIND}:{payload}".encode()).decode()


def _decode_page_token(token: str, search_filter: SearchFilter) -> tuple[Cursor | None, str]:
    """The cursor in `token`, or what is wrong with it."""
    not_ours = "not a token from a previous response"
    if len(token) > MAX_PAGE_TOKEN:
        return None, f"must be at most {MAX_PAGE_TOKEN} characters"
    try:
        text = base64.b64decode(token, altchars=b"-_", validate=True).decode()
        kind, _, payload = text.partition(":")
        parts = json.loads(payload) if kind == _TOKEN_KIND else None
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: [[[[...
        return None, not_ours
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        return None, not_ours
    digest, key, product_id = parts
    if RESOURCE_ID.violations(product_id, ""):
        return None, not_ours
    if digest != search_filter.digest():
        return None, "was issued for other filters: keep query, prices and in_stock_only"
    return Cursor(sort_key=key, product_id=product_id), ""


def _bound_violations(bound: Money | None, field: str) -> list[FieldViolation]:
    if bound is None:
        return []
    if not _CURRENCY.fullmatch(bound.currency_code):
        return [FieldViolation(f"{field}.currency_code", "must be three upper-case letters")]
    if not -NANOS_PER_UNIT < bound.nanos < NANOS_PER_UNIT:
        return [FieldViolation(f"{field}.nanos", "must be between -999999999 and 999999999")]
    if (bound.units > 0 > bound.nanos) or (bound.units < 0 < bound.nanos):
        return [FieldViolation(f"{field}.nanos", "must have the same sign as units")]
    if bound.to_nanos() < 0:
        return [FieldViolation(field, "must not be negative")]
    return []


def _range_violations(least: Money, most: Money) -> list[FieldViolation]:
    if least.currency_code != most.currency_code:
        return [
            FieldViolation(
                "max_price.currency_code", "must be the currency of min_price: one currency"
            )
        ]
    if most.to_nanos() < least.to_nanos():
        return [FieldViolation("max_price", "must not be below min_price")]
    return []
