"""services.product.domain: product validation and paging."""

from __future__ import annotations

import re

import pytest

from mesh.problems import InvalidArgument
from services.product import domain
from services.product.domain import Money

EUR_3 = Money("EUR", 3, 500_000_000)


def make(**changes: object) -> domain.Product:
    fields: dict[str, object] = {
        "product_id": "sku-espresso",
        "name": "Espresso",
        "description": "",
        "price": EUR_3,
    }
    fields.update(changes)
    return domain.new_product(**fields)  # type: ignore[arg-type]


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def test_valid_product_keeps_its_fields() -> None:
    product = make()
    assert product == domain.Product("sku-espresso", "Espresso", "", EUR_3)


def test_empty_id_is_assigned() -> None:
    first, second = make(product_id=""), make(product_id="")
    assert re.fullmatch(r"prd-[0-9a-f]{12}", first.product_id)
    assert first.product_id != second.product_id


@pytest.mark.parametrize(
    "product_id",
    ["Sku", "-sku", "sku_1", "sku 1", "a" * 65, "sku-1\n", "café"],
)
def test_bad_ids_are_rejected(product_id: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        make(product_id=product_id)
    assert fields_of(error) == {"product.product_id"}


@pytest.mark.parametrize("product_id", ["a", "0", "sku-1-", "a" * 64])
def test_good_ids_are_accepted(product_id: str) -> None:
    assert make(product_id=product_id).product_id == product_id


@pytest.mark.parametrize(
    ("name", "ok"), [("", False), ("   ", False), ("x" * 200, True), ("x" * 201, False)]
)
def test_name_length(name: str, ok: bool) -> None:
    if ok:
        assert make(name=name).name == name
    else:
        with pytest.raises(InvalidArgument) as error:
            make(name=name)
        assert fields_of(error) == {"product.name"}


def test_description_limit() -> None:
    assert make(description="d" * 2000).description == "d" * 2000
    with pytest.raises(InvalidArgument) as error:
        make(description="d" * 2001)
    assert fields_of(error) == {"product.description"}


@pytest.mark.parametrize(
    ("price", "field"),
    [
        (None, "product.price"),
        (Money("EUR", 0, 0), "product.price"),
        (Money("EUR", -1, 0), "product.price"),
        (Money("EUR", 0, -5), "product.price"),
        (Money("eur", 1, 0), "product.price.currency_code"),
        (Money("EURO", 1, 0), "product.price.currency_code"),
        (Money("", 1, 0), "product.price.currency_code"),
        (Money("EUR", 1, 1_000_000_000), "product.price.nanos"),
        (Money("EUR", 2, -1), "product.price.nanos"),
    ],
)
def test_bad_prices(price: Money | None, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        make(price=price)
    assert fields_of(error) == {field}


def test_a_price_below_one_unit_is_fine() -> None:
    assert make(price=Money("JPY", 0, 1)).price == Money("JPY", 0, 1)


def test_every_violation_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as error:
        make(
            product_id="Bad",
            name="",
            description="d" * 2001,
            price=Money("usd", 1, 1_000_000_000),
        )
    assert fields_of(error) == {
        "product.product_id",
        "product.name",
        "product.description",
        "product.price.currency_code",
        "product.price.nanos",
    }


@pytest.mark.parametrize(("requested", "size"), [(0, 50), (1, 1), (200, 200), (201, 200)])
def test_page_size(requested: int, size: int) -> None:
    assert domain.parse_page(requested, "") == domain.Page(size=size, after=None)


def test_page_token_round_trips() -> None:
    token = domain.encode_page_token("sku-9")
    assert domain.parse_page(0, token).after == "sku-9"


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "c2t1LTk",  # "sku-9" without padding or prefix
        "c2t1LTk=",  # "sku-9" without the prefix
        "cHJvZHVjdDpCQUQ=",  # "product:BAD"
        "b3JkZXI6Mw==",  # "order:3", another service's token
        "é",
    ],
)
def test_foreign_page_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.parse_page(0, token)
    assert fields_of(error) == {"page_token"}


def test_negative_size_and_bad_token_are_reported_together() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.parse_page(-1, "nope")
    assert fields_of(error) == {"page_size", "page_token"}
