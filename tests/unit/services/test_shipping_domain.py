"""services.shipping.domain: validation, the schedule, cancelling, refusals, keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mesh.problems import MAX_MESSAGE, FailedPrecondition, InvalidArgument
from services.common.ids import RESOURCE_ID
from services.shipping import domain
from services.shipping.domain import (
    Address,
    Progress,
    Refusal,
    RefusalPolicy,
    Shipment,
    ShipmentItem,
    ShipmentRequest,
    ShipmentStatus,
)

HOME = Address("Ada Lovelace", "12 St James's Square", "London", "SW1Y 4JH", "GB")
ITEMS = (ShipmentItem("sku-mug", 2), ShipmentItem("sku-espresso", 1))
STEP = 5_000
T0 = 1_000_000

CREATED, PACKED, SHIPPED, DELIVERED, CANCELLED = (
    ShipmentStatus.CREATED,
    ShipmentStatus.PACKED,
    ShipmentStatus.SHIPPED,
    ShipmentStatus.DELIVERED,
    ShipmentStatus.CANCELLED,
)


def shipment(**changes: object) -> Shipment:
    base = Shipment("shp-1", "ord-1", HOME, ITEMS, T0, STEP, "key-1")
    return replace(base, **changes)  # type: ignore[arg-type]


def request(key: str = "key-1", **changes: object) -> ShipmentRequest:
    return replace(ShipmentRequest("ord-1", HOME, ITEMS, key), **changes)  # type: ignore[arg-type]


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [violation.field for violation in error.value.violations]


def test_a_good_request_is_returned() -> None:
    assert domain.validate_shipment("ord-1", HOME, ITEMS, "key-1") == request()


def test_every_bad_field_is_listed() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_shipment("", None, [], "")
    assert fields_of(error) == ["order_id", "address", "items", "idempotency_key"]


@pytest.mark.parametrize(
    ("address", "fields"),
    [
        (Address("", "", "", "", ""), ["address.name", "address.street", "address.city",
                                        "address.country"]),
        (replace(HOME, name="   "), ["address.name"]),
        (replace(HOME, name="n" * 101), ["address.name"]),
        (replace(HOME, street="s" * 201), ["address.street"]),
        (replace(HOME, city="Lon\ndon"), ["address.city"]),
        (replace(HOME, street="Main St\x00"), ["address.street"]),
        (replace(HOME, name="Ada\u2028Lovelace"), ["address.name"]),
        (replace(HOME, postal_code="-123"), ["address.postal_code"]),
        (replace(HOME, postal_code="1" * 17), ["address.postal_code"]),
        (replace(HOME, postal_code="12/34"), ["address.postal_code"]),
        (replace(HOME, country="gb"), ["address.country"]),
        (replace(HOME, country="XX"), ["address.country"]),
        (replace(HOME, country="GBR"), ["address.country"]),
    ],
)  # fmt: skip
def test_a_bad_address_line_is_named(address: Address, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.validate_shipment("ord-1", address, ITEMS, "key-1")
    assert fields_of(error) == fields


@pytest.mark.parametrize(
    "address",
    [
        replace(HOME, postal_code=""),  # a country without postal codes
        replace(HOME, name="Zoë Ångström-Łukasz", city="Kraków", country="PL"),
        replace(
            HOME, name="李小龍", street="彌敦道 1號", city="香港", postal_code="", country="HK"
        ),
        replace(HOME, postal_code="10115", country="DE"),
    ],
)
def test_addresses_of_many_kinds_are_accepted(address: Address) -> None:
    assert domain.validate_shipment("ord-1", address, ITEMS, "k").address == address


def test_items_follow_the_shared_rules() -> None:
    items = [ShipmentItem("sku-a", 1), ShipmentItem("sku-a", 0), ShipmentItem("SKU B", 1)]
    with pytest.raises(InvalidArgument) as error:
        domain.validate_shipment("ord-1", HOME, items, "key-1")
    assert fields_of(error) == ["items[1].product_id", "items[1].quantity", "items[2].product_id"]
    with pytest.raises(InvalidArgument) as error:
        domain.validate_shipment("ord-1", HOME, [ShipmentItem(f"p{n}", 1) for n in range(101)], "k")
    assert fields_of(error) == ["items"]


def test_an_oversized_request_is_refused_in_a_bounded_message() -> None:
    huge = "x" * 100_000
    with pytest.raises(InvalidArgument) as error:
        domain.validate_shipment(huge, Address(huge, huge, huge, huge, huge), ITEMS, huge)
    assert len(error.value.message) <= MAX_MESSAGE


def test_a_new_shipment_id_is_a_resource_id() -> None:
    ids = {domain.new_shipment_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(RESOURCE_ID.pattern.fullmatch(i) and i.startswith("shp-") for i in ids)


# -- the schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "progress"),
    [
        (-10_000, Progress(CREATED, T0)),  # another instance's clock is a little behind
        (0, Progress(CREATED, T0)),
        (STEP - 1, Progress(CREATED, T0)),
        (STEP, Progress(PACKED, T0 + STEP)),
        (2 * STEP + STEP // 2, Progress(SHIPPED, T0 + 2 * STEP)),
        (3 * STEP, Progress(DELIVERED, T0 + 3 * STEP)),
        (1_000 * STEP, Progress(DELIVERED, T0 + 3 * STEP)),
    ],
)
def test_the_status_moves_on_one_step_at_a_time(elapsed: int, progress: Progress) -> None:
    assert shipment().progress(T0 + elapsed) == progress


def test_the_next_change_is_a_step_after_the_current_status() -> None:
    assert shipment().next_change_ns(T0) == T0 + STEP
    assert shipment().next_change_ns(T0 + STEP + 1) == T0 + 2 * STEP
    assert shipment().next_change_ns(T0 + 3 * STEP) is None
    assert shipment(cancel_time_ns=T0 + 1).next_change_ns(T0 + 2) is None


def test_a_cancelled_shipment_stays_cancelled() -> None:
    cancelled = domain.cancelled(shipment(), T0 + STEP + 7)  # PACKED: not left yet
    assert cancelled == shipment(cancel_time_ns=T0 + STEP + 7)
    assert cancelled.progress(T0 + 100 * STEP) == Progress(CANCELLED, T0 + STEP + 7)
    assert domain.cancelled(cancelled, T0 + 100 * STEP) is cancelled


@pytest.mark.parametrize(("elapsed", "status"), [(2 * STEP, "SHIPPED"), (3 * STEP, "DELIVERED")])
def test_a_shipment_that_has_left_cannot_be_cancelled(elapsed: int, status: str) -> None:
    with pytest.raises(FailedPrecondition) as error:
        domain.cancelled(shipment(), T0 + elapsed)
    assert [(v.type, v.subject, v.description) for v in error.value.violations] == [
        (domain.SHIPMENT_STATUS, "shp-1", f"is {status}")
    ]


# -- keys and refusals ---------------------------------------------------------------------


def test_the_order_of_the_items_does_not_change_the_request() -> None:
    assert request(items=ITEMS[::-1]).fingerprint == request().fingerprint
    assert request(address=replace(HOME, city="Paris")).fingerprint != request().fingerprint
    assert request(order_id="ord-2").fingerprint != request().fingerprint
    assert request(items=(ShipmentItem("sku-mug", 3),)).fingerprint != request().fingerprint
    assert request("another-key").fingerprint == request().fingerprint


def test_a_repeated_key_gets_the_first_shipment_or_refusal() -> None:
    first = shipment()
    assert domain.creation_outcome(first, request(items=ITEMS[::-1])) is first
    refusal = Refusal("key-1", request().fingerprint, "GB", "not today", T0)
    with pytest.raises(FailedPrecondition) as error:
        domain.creation_outcome(refusal, request())
    assert [(v.type, v.subject) for v in error.value.violations] == [
        (domain.SHIPMENT_REFUSED, "GB")
    ]


def test_a_key_reused_for_another_shipment_is_invalid() -> None:
    other = request(address=replace(HOME, street="1 Other Road"))
    for earlier in (shipment(), Refusal("key-1", request().fingerprint, "GB", "no", T0)):
        with pytest.raises(InvalidArgument) as error:
            domain.creation_outcome(earlier, other)
        assert fields_of(error) == ["idempotency_key"]


def test_the_refusal_policy() -> None:
    policy = RefusalPolicy(order_ids=frozenset({"ord-bad"}), countries=frozenset({"AQ"}))
    assert policy.refusal(request()) is None
    assert policy.refusal(request(order_id="ord-bad")) == (
        "ord-bad",
        "the carrier refuses this order",
    )
    antarctica = request(address=replace(HOME, country="AQ"))
    assert policy.refusal(antarctica) == ("AQ", "the carrier does not ship to AQ")


def test_a_share_refuses_that_share_of_keys_and_always_the_same_ones() -> None:
    policy = RefusalPolicy(share=0.5)
    refused = [n for n in range(1_000) if policy.refusal(request(f"k{n}")) is not None]
    assert 450 < len(refused) < 550
    assert refused == [n for n in range(1_000) if policy.refusal(request(f"k{n}")) is not None]
    assert all(RefusalPolicy(share=1.0).refusal(request(f"k{n}")) for n in range(100))
