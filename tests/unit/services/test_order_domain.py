"""services.order.domain: request checks, exact pricing, paging."""

from __future__ import annotations

import pytest

from mesh.problems import FailedPrecondition, InvalidArgument
from services.order import domain
from services.order.domain import Line, Money, OrderItem, OrderStatus


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def request(*lines: tuple[str, int]) -> domain.OrderRequest:
    return domain.validate_order_request("cust-1", [Line(p, q) for p, q in lines], "")


def test_valid_request_is_kept() -> None:
    checked = domain.validate_order_request("c" * 64, [Line("a", 1)], "r" * 64)
    assert checked == domain.OrderRequest("c" * 64, (Line("a", 1),), "r" * 64)


def test_every_bad_field_is_reported_at_once() -> None:
    lines = [Line("a", 0), Line("", 1), Line("a", 2), Line("b", -3)]
    with pytest.raises(InvalidArgument) as error:
        domain.validate_order_request("c" * 65, lines, "r" * 65)
    assert fields_of(error) == {
        "customer_id",
        "items[0].quantity",
        "items[1].product_id",
        "items[2].product_id",
        "items[3].quantity",
        "request_id",
    }


@pytest.mark.parametrize(
    ("customer_id", "request_id", "bad"),
    [
        ("ada lovelace", "", {"customer_id"}),
        ("ada\n", "", {"customer_id"}),
        ("-ada", "", {"customer_id"}),
        ("ada", "r 1", {"request_id"}),
        ("ada", "r1\x00", {"request_id"}),
        ("ada", "é", {"request_id"}),
    ],
)
def test_malformed_ids_are_refused(customer_id: str, request_id: str, bad: set[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_order_request(customer_id, [Line("a", 1)], request_id)
    assert fields_of(error) == bad


@pytest.mark.parametrize("customer_id", ["ada", "Ada.Lovelace@example.org", "c-1_2+3"])
def test_customer_ids_may_be_emails_and_handles(customer_id: str) -> None:
    request_id = "6f1c2d3e-0a1b-4c5d-8e9f-a0b1c2d3e4f5"
    checked = domain.validate_order_request(customer_id, [Line("a", 1)], request_id)
    assert (checked.customer_id, checked.request_id) == (customer_id, request_id)


def test_malformed_product_ids_are_refused_per_item() -> None:
    lines = [Line("ok", 1), Line("x" * 20_000, 1), Line("Bad Id", 1)]
    with pytest.raises(InvalidArgument) as error:
        domain.validate_order_request("ada", lines, "")
    assert fields_of(error) == {"items[1].product_id", "items[2].product_id"}


def test_more_than_the_most_items_is_one_violation() -> None:
    lines = [Line(f"p{index}", 0) for index in range(domain.MAX_ITEMS + 1)]
    with pytest.raises(InvalidArgument) as error:
        domain.validate_order_request("ada", lines, "")
    assert [(v.field, v.description) for v in error.value.violations] == [
        ("items", "at most 100 items, got 101")
    ]
    accepted = [Line(f"p{index}", 1) for index in range(domain.MAX_ITEMS)]
    assert len(domain.validate_order_request("ada", accepted, "").lines) == 100


def test_the_fingerprint_ignores_item_order_but_not_quantities() -> None:
    same = domain.request_fingerprint([Line("a", 1), Line("b", 2)])
    assert domain.request_fingerprint([Line("b", 2), Line("a", 1)]) == same
    assert domain.request_fingerprint([Line("a", 1), Line("b", 3)]) != same
    assert domain.request_fingerprint([Line("a", 12)]) != domain.request_fingerprint(
        [Line("a1", 2)]
    )


def test_customer_and_items_are_required() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_order_request("", [], "")
    assert fields_of(error) == {"customer_id", "items"}


@pytest.mark.parametrize(
    ("amount", "money"),
    [
        (0, Money("EUR", 0, 0)),
        (1, Money("EUR", 0, 1)),
        (20_290_000_000, Money("EUR", 20, 290_000_000)),
        (-1_500_000_000, Money("EUR", -1, -500_000_000)),
        (-1, Money("EUR", 0, -1)),
    ],
)
def test_money_round_trips_through_nanos(amount: int, money: Money) -> None:
    assert Money.from_nanos("EUR", amount) == money
    assert money.to_nanos() == amount


def test_total_is_exact() -> None:
    dime, latte = Money("EUR", 0, 100_000_000), Money("EUR", 19, 990_000_000)
    order = domain.price_order(
        request(("dime", 3), ("latte", 1)), [dime, latte], order_id="ord-1", create_time_ns=7
    )
    assert order.total == Money("EUR", 20, 290_000_000)
    assert order.items == (OrderItem("dime", 3, dime), OrderItem("latte", 1, latte))
    assert (order.order_id, order.customer_id, order.status, order.create_time_ns) == (
        "ord-1",
        "cust-1",
        OrderStatus.PENDING,
        7,
    )
    assert [(step.name, step.status.name, step.attempts) for step in order.saga] == [
        ("reserve_stock", "PENDING", 0),
        ("charge_payment", "PENDING", 0),
        ("create_shipment", "PENDING", 0),
    ]
    assert order.address == domain.DEFAULT_ADDRESS


def test_an_address_is_checked_line_by_line() -> None:
    bad = domain.Address("", "x" * 201, "Ghent\u2028East", "-1", "be")
    found = domain.validate_address(bad, "shipping_address")
    assert [v.field for v in found] == [
        "shipping_address.name",
        "shipping_address.street",
        "shipping_address.city",
        "shipping_address.postal_code",
        "shipping_address.country",
    ]
    assert domain.validate_address(domain.DEFAULT_ADDRESS, "shipping_address") == []
    assert domain.validate_address(domain.Address("A", "B", "C", "", "HK"), "a") == []


def test_unknown_products_are_field_violations() -> None:
    one = Money("EUR", 1, 0)
    with pytest.raises(InvalidArgument) as error:
        domain.price_order(
            request(("a", 1), ("b", 1), ("c", 1)), [one, None, None], order_id="o", create_time_ns=0
        )
    assert fields_of(error) == {"items[1].product_id", "items[2].product_id"}


def test_mixed_currencies_are_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as error:
        domain.price_order(
            request(("a", 1), ("b", 1), ("c", 1)),
            [Money("EUR", 1, 0), Money("USD", 1, 0), Money("EUR", 2, 0)],
            order_id="o",
            create_time_ns=0,
        )
    assert [(v.type, v.subject) for v in error.value.violations] == [("CURRENCY", "b")]


def test_a_total_beyond_int64_units_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.price_order(
            request(("a", 2**62), ("b", 2**62)),
            [Money("EUR", 1, 0), Money("EUR", 1, 0)],
            order_id="o",
            create_time_ns=0,
        )
    assert fields_of(error) == {"items"}


def test_new_order_ids_fit_the_inventory_pattern() -> None:
    order_id = domain.new_order_id()
    assert order_id.startswith("ord-")
    assert len(order_id) == 20
    assert int(order_id[4:], 16) >= 0


@pytest.mark.parametrize(("requested", "size"), [(0, 50), (7, 7), (1000, 200)])
def test_page_size(requested: int, size: int) -> None:
    assert domain.parse_list_request("", requested, "").size == size


def test_page_token_round_trips() -> None:
    assert domain.parse_list_request("ada", 0, domain.encode_page_token(42)).before == 42


@pytest.mark.parametrize(
    "token", ["zzz", "b3JkZXI6", "b3JkZXI6LTE=", "cHJvZHVjdDphYmM=", "b3JkZXI6" * 100]
)
def test_bad_tokens_and_sizes_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.parse_list_request("", -5, token)
    assert fields_of(error) == {"page_size", "page_token"}


def test_a_malformed_customer_filter_is_invalid_with_the_paging() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.parse_list_request("x" * 65, -1, "")
    assert fields_of(error) == {"customer_id", "page_size"}


@pytest.mark.parametrize("order_id", ["ord-0123456789abcdef", "o"])
def test_well_formed_order_ids_are_looked_up(order_id: str) -> None:
    assert domain.require_order_id(order_id) == order_id


@pytest.mark.parametrize("order_id", ["", "ORD-1", "ord 1", "o" * 65, "ord-1\n", "ördnung"])
def test_malformed_order_ids_are_invalid(order_id: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.require_order_id(order_id)
    assert fields_of(error) == {"order_id"}
