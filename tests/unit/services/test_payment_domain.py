"""services.payment.domain: validation, the decline policy, repeated keys, refunds."""

from __future__ import annotations

import pytest

from mesh.problems import MAX_MESSAGE, FailedPrecondition, InvalidArgument
from services.common.ids import RESOURCE_ID
from services.common.money import Money
from services.payment import domain
from services.payment.domain import (
    ChargeRequest,
    Decline,
    DeclinePolicy,
    Payment,
    PaymentStatus,
)

TEN_EUROS = Money("EUR", 10, 0)


def charge(key: str = "key-1", **changes: object) -> ChargeRequest:
    fields: dict[str, object] = {
        "order_id": "ord-1",
        "customer_id": "alice",
        "amount": TEN_EUROS,
        "idempotency_key": key,
    }
    fields.update(changes)
    return ChargeRequest(**fields)  # type: ignore[arg-type]


def payment(**changes: object) -> Payment:
    fields: dict[str, object] = {
        "payment_id": "pay-1",
        "order_id": "ord-1",
        "customer_id": "alice",
        "amount": TEN_EUROS,
        "status": PaymentStatus.CHARGED,
        "create_time_ns": 1_000,
        "charge_key": "key-1",
    }
    fields.update(changes)
    return Payment(**fields)  # type: ignore[arg-type]


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [violation.field for violation in error.value.violations]


def test_a_good_charge_is_returned_as_a_request() -> None:
    request = domain.validate_charge("ord-1", "alice@example.com", TEN_EUROS, "8c1f-2:a.b_c")
    assert request == ChargeRequest("ord-1", "alice@example.com", TEN_EUROS, "8c1f-2:a.b_c")


def test_every_bad_field_of_a_charge_is_listed() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_charge("", "", None, "")
    assert fields_of(error) == ["order_id", "customer_id", "amount", "idempotency_key"]


@pytest.mark.parametrize(
    ("amount", "fields"),
    [
        (Money("XYZ", 1, 0), ["amount.currency_code"]),
        (Money("usd", 1, 0), ["amount.currency_code"]),
        (Money("", 1, 0), ["amount.currency_code"]),
        (Money("XAU", 1, 0), ["amount.currency_code"]),  # gold is no currency to charge in
        (Money("XTS", 1, 0), ["amount.currency_code"]),  # the testing code
        (Money("USD", 0, 0), ["amount"]),
        (Money("USD", -5, 0), ["amount"]),
        (Money("USD", 1, 1_000_000_000), ["amount.nanos"]),
        (Money("USD", 1, -1), ["amount.nanos"]),
    ],
)
def test_an_amount_must_be_positive_in_a_known_currency(amount: Money, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_charge("ord-1", "alice", amount, "key-1")
    assert fields_of(error) == fields


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "CHF", "XOF"])
def test_circulating_currencies_are_accepted(currency: str) -> None:
    assert domain.validate_charge("ord-1", "alice", Money(currency, 0, 1), "k").amount.nanos == 1


@pytest.mark.parametrize("key", ["-starts-with-dash", "has space", "k" * 65, "ключ", "a/b"])
def test_a_malformed_idempotency_key_is_invalid(key: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_charge("ord-1", "alice", TEN_EUROS, key)
    assert fields_of(error) == ["idempotency_key"]


def test_an_oversized_request_is_refused_in_a_bounded_message() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_charge(
            "o" * 100_000, "c" * 100_000, Money("U" * 100_000, 1, 0), "k" * 10**5
        )
    assert len(error.value.message) <= MAX_MESSAGE
    assert all(len(v.description) < 200 for v in error.value.violations)


def test_the_refund_fields_are_checked_together() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_refund("PAY 1", "")
    assert fields_of(error) == ["payment_id", "idempotency_key"]
    assert domain.validate_refund("pay-1", "r-1") == ("pay-1", "r-1")


def test_a_new_payment_id_is_a_resource_id() -> None:
    ids = {domain.new_payment_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(RESOURCE_ID.pattern.fullmatch(i) and i.startswith("pay-") for i in ids)


# -- the decline policy ------------------------------------------------------------------


def test_every_charge_of_a_listed_customer_is_declined() -> None:
    policy = DeclinePolicy(customers=frozenset({"mallory"}))
    assert policy.reason(charge(customer_id="mallory")) is not None
    assert policy.reason(charge(customer_id="alice")) is None


def test_a_charge_over_the_card_limit_is_declined_in_its_currency_only() -> None:
    policy = DeclinePolicy(over=Money.parse("10.00 EUR"))
    assert policy.reason(charge(amount=TEN_EUROS)) is None  # at the limit: allowed
    over = policy.reason(charge(amount=Money("EUR", 10, 1)))
    assert over is not None
    assert "card limit of 10.00 EUR" in over
    assert policy.reason(charge(amount=Money("USD", 500, 0))) is None


def test_a_share_declines_that_share_of_keys_and_always_the_same_ones() -> None:
    policy = DeclinePolicy(share=0.3)
    keys = [f"key-{n}" for n in range(2_000)]
    declined = [key for key in keys if policy.reason(charge(key)) is not None]
    assert 0.25 < len(declined) / len(keys) < 0.35
    assert declined == [key for key in keys if policy.reason(charge(key)) is not None]


def test_share_zero_declines_nothing_and_share_one_everything() -> None:
    keys = [f"key-{n}" for n in range(200)]
    assert all(DeclinePolicy(share=0.0).reason(charge(key)) is None for key in keys)
    assert all(DeclinePolicy(share=1.0).reason(charge(key)) is not None for key in keys)


def test_the_share_of_a_key_is_stable_and_in_range() -> None:
    shares = [domain.key_share(f"k{n}") for n in range(500)]
    assert all(0 <= share < 1 for share in shares)
    assert domain.key_share("k1") == domain.key_share("k1") != domain.key_share("k2")


# -- repeated keys -----------------------------------------------------------------------


def test_a_repeated_charge_gets_the_first_payment() -> None:
    first = payment()
    assert domain.charge_outcome(first, charge()) is first


@pytest.mark.parametrize(
    "changes",
    [{"amount": Money("EUR", 10, 1)}, {"amount": Money("USD", 10, 0)}, {"order_id": "ord-2"},
     {"customer_id": "bob"}],
)  # fmt: skip
def test_a_key_reused_for_another_charge_is_invalid(changes: dict[str, object]) -> None:
    for earlier in (payment(), Decline(charge(), "declined", 1)):
        with pytest.raises(InvalidArgument) as error:
            domain.charge_outcome(earlier, charge(**changes))
        assert fields_of(error) == ["idempotency_key"]


def test_a_declined_key_is_declined_again() -> None:
    with pytest.raises(FailedPrecondition) as error:
        domain.charge_outcome(Decline(charge(), "the processor declined", 1), charge())
    [violation] = error.value.violations
    assert (violation.type, violation.subject) == (domain.PAYMENT_DECLINED, "alice")


# -- refunds -----------------------------------------------------------------------------


def test_a_refund_marks_the_payment_refunded_with_its_key_and_time() -> None:
    after = domain.refunded(payment(), "refund-1", 5_000)
    assert after == payment(
        status=PaymentStatus.REFUNDED, refund_key="refund-1", refund_time_ns=5_000
    )


def test_a_refunded_payment_cannot_be_refunded_again() -> None:
    done = domain.refunded(payment(), "refund-1", 5_000)
    with pytest.raises(FailedPrecondition) as error:
        domain.refunded(done, "refund-2", 6_000)
    assert [(v.type, v.subject) for v in error.value.violations] == [
        (domain.PAYMENT_STATUS, "pay-1")
    ]


def test_a_refund_key_names_one_payment() -> None:
    done = domain.refunded(payment(), "refund-1", 5_000)
    assert domain.refund_again(done, "pay-1") is done
    with pytest.raises(InvalidArgument) as error:
        domain.refund_again(done, "pay-2")
    assert fields_of(error) == ["idempotency_key"]


# -- listing -----------------------------------------------------------------------------


def test_listing_needs_an_order_and_good_paging() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.parse_list_request("", -1, "not-a-token")
    assert fields_of(error) == ["order_id", "page_size", "page_token"]
    page = domain.parse_list_request("ord-1", 0, domain.encode_page_token(42))
    assert (page.order_id, page.size, page.before) == ("ord-1", 50, 42)


def test_a_token_with_an_oversized_cursor_is_refused() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.parse_list_request("ord-1", 0, domain.encode_page_token(10**30))
    assert fields_of(error) == ["page_token"]
