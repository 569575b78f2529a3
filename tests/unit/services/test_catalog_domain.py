"""The catalog's pure rules: search validation (every bad field at once) and page
tokens (opaque, resumable, bound to their filters, refused when forged)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from mesh.problems import InvalidArgument
from services.catalog.domain import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    CatalogItem,
    Cursor,
    Search,
    SearchFilter,
    encode_page_token,
    parse_search,
    require_product_id,
    sort_key,
)
from services.common.money import Money


def searched(
    *,
    query: str = "",
    min_price: Money | None = None,
    max_price: Money | None = None,
    in_stock_only: bool = False,
    page_size: int = 0,
    page_token: str = "",
) -> Search:
    return parse_search(
        query=query,
        min_price=min_price,
        max_price=max_price,
        in_stock_only=in_stock_only,
        page_size=page_size,
        page_token=page_token,
    )


def fields(**given: Any) -> list[str]:
    with pytest.raises(InvalidArgument) as error:
        searched(**given)
    return [violation.field for violation in error.value.violations]


def usd(units: int, nanos: int = 0) -> Money:
    return Money("USD", units, nanos)


def test_an_empty_search_matches_everything_from_the_start() -> None:
    search = searched()
    assert search.filter == SearchFilter()
    assert (search.size, search.after) == (DEFAULT_PAGE_SIZE, None)
    assert search.filter.currency is None


def test_query_words_are_casefolded_and_split() -> None:
    search = searched(query="  Straße   MUG ")
    assert search.filter.words == ("strasse", "mug")
    assert sort_key("Große Tasse") == "grosse tasse"


def test_a_price_range_sets_the_currency() -> None:
    search = searched(min_price=usd(0), max_price=usd(10))
    assert search.filter.currency == "USD"
    only_max = searched(max_price=Money("EUR", 5, 0))
    assert only_max.filter.currency == "EUR"


@pytest.mark.parametrize("size", [1, 20, MAX_PAGE_SIZE])
def test_page_sizes_in_range_are_kept(size: int) -> None:
    assert searched(page_size=size).size == size


@pytest.mark.parametrize(
    ("given", "bad"),
    [
        ({"page_size": -1}, ["page_size"]),
        ({"page_size": MAX_PAGE_SIZE + 1}, ["page_size"]),
        ({"query": "x" * 201}, ["query"]),
        ({"min_price": usd(-1)}, ["min_price"]),
        ({"max_price": Money("USD", 0, -5)}, ["max_price"]),
        ({"min_price": Money("usd", 1, 0)}, ["min_price.currency_code"]),
        ({"min_price": Money("USD", 1, -1)}, ["min_price.nanos"]),
        ({"max_price": Money("USD", 1, 1_000_000_000)}, ["max_price.nanos"]),
        ({"min_price": usd(1), "max_price": Money("EUR", 5, 0)}, ["max_price.currency_code"]),
        ({"min_price": usd(5), "max_price": usd(4, 999_999_999)}, ["max_price"]),
        ({"page_token": "not base64!"}, ["page_token"]),
        ({"page_size": -3, "query": "y" * 300, "min_price": usd(-2)}, ["query", "min_price", "page_size"]),
    ],
)  # fmt: skip
def test_bad_fields_are_each_named(given: dict[str, object], bad: list[str]) -> None:
    assert fields(**given) == bad


def test_an_equal_range_is_fine() -> None:
    search = searched(min_price=usd(5), max_price=usd(5))
    assert search.filter.min_price == search.filter.max_price == usd(5)


def test_a_token_resumes_after_its_cursor() -> None:
    chosen = SearchFilter(words=("mug",), in_stock_only=True)
    token = encode_page_token(chosen, Cursor("große mug", "sku-1"))
    search = searched(query="MUG", in_stock_only=True, page_token=token)
    assert search.after == Cursor("große mug", "sku-1")
    assert token.isascii()


@pytest.mark.parametrize(
    "other",
    [{"query": "cup"}, {"in_stock_only": False}, {"min_price": usd(1)}],
)
def test_a_token_is_refused_with_other_filters(other: dict[str, object]) -> None:
    token = encode_page_token(SearchFilter(words=("mug",), in_stock_only=True), Cursor("a", "b"))
    given = {"query": "mug", "in_stock_only": True, **other, "page_token": token}
    assert fields(**given) == ["page_token"]


@pytest.mark.parametrize("letter", ["a", "ΐ", "ﬃ", "😀"])
def test_a_token_after_the_longest_name_is_accepted(letter: str) -> None:
    cursor = Cursor(sort_key(letter * 200), "sku-" + "9" * 60)
    token = encode_page_token(SearchFilter(), cursor)
    assert searched(page_token=token).after == cursor


def test_the_page_size_may_change_between_pages() -> None:
    token = encode_page_token(SearchFilter(), Cursor("a", "sku-a"))
    assert searched(page_size=5, page_token=token).size == 5


def encoded(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        encoded("product:sku-1"),  # product's own kind of token
        encoded('catalog:["x","y"]'),
        encoded('catalog:{"a":1,"b":2,"c":3}'),
        encoded('catalog:["x","y",3]'),
        encoded('catalog:["x","y","NOT AN ID"]'),
        encoded("catalog:" + "[" * 2000),
        encoded("catalog:not json"),
        base64.urlsafe_b64encode(b"catalog:\xff\xfe").decode(),
        "A" * 5000,
    ],
    ids=["kind", "short", "object", "number", "bad-id", "deep", "json", "utf8", "long"],
)
def test_forged_tokens_are_refused(token: str) -> None:
    assert fields(page_token=token) == ["page_token"]


def test_a_filter_digest_tells_filters_apart() -> None:
    filters = [
        SearchFilter(),
        SearchFilter(words=("a",)),
        SearchFilter(words=("a", "b")),
        SearchFilter(min_price=usd(1)),
        SearchFilter(max_price=usd(1)),
        SearchFilter(min_price=Money("EUR", 1, 0)),
        SearchFilter(in_stock_only=True),
    ]
    assert len({f.digest() for f in filters}) == len(filters)
    assert SearchFilter(words=("a",)).digest() == SearchFilter(words=("a",)).digest()


def test_an_item_is_in_stock_with_units_available() -> None:
    item = CatalogItem("sku-1", "Mug", "", usd(3))
    assert (item.available, item.in_stock) == (0, False)
    assert CatalogItem("sku-1", "Mug", "", usd(3), available=1).in_stock


def test_a_malformed_product_id_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as error:
        require_product_id("Not An Id")
    assert [v.field for v in error.value.violations] == ["product_id"]
