"""The payment service (two replicas on one database) and the shipping service as real
processes, called through the mesh client as admin: charges and their retries, refunds,
the decline knob; shipments tracked through their statuses on a quick clock, refused
and cancelled."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from mesh.supervisor import EtcdServer
from tests.harness.mesh import MeshHarness, write_config

STEP_SECONDS = 0.4
PAYMENT_SETTINGS = {"decline": {"customers": ["mallory"]}, "delay_ms": 100}
SHIPPING_SETTINGS = {"step_seconds": STEP_SECONDS, "fail": {"countries": ["AQ"]}}


@pytest.fixture(scope="module")
async def mesh(
    tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer, certs_dir: Path
) -> AsyncIterator[MeshHarness]:
    config = write_config(
        tmp_path_factory.mktemp("payment-shipping"),
        etcd_endpoint=etcd.endpoint,
        certs_dir=certs_dir,
        replicas={"payment": 2, "shipping": 1},
        overrides={
            "services": {
                "payment": {
                    "replicas": 2, "port": 0, "metrics_port": 0, "settings": PAYMENT_SETTINGS,
                },
                "shipping": {
                    "replicas": 1, "port": 0, "metrics_port": 0, "settings": SHIPPING_SETTINGS,
                },
            }
        },
    )  # fmt: skip
    harness = MeshHarness(config, etcd.endpoint)
    try:
        await harness.start()
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture(scope="module")
async def payments(mesh: MeshHarness) -> Any:
    return payment_pb2_grpc.PaymentServiceStub(mesh.client().channel("payment"))


@pytest.fixture(scope="module")
async def shipping(mesh: MeshHarness) -> Any:
    return shipping_pb2_grpc.ShippingServiceStub(mesh.client().channel("shipping"))


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def new_order() -> str:
    return f"ord-{uuid.uuid4().hex[:12]}"


def charge_request(
    order_id: str, key: str, *, customer: str = "alice", units: int = 25
) -> payment_pb2.ChargeRequest:
    return payment_pb2.ChargeRequest(
        order_id=order_id,
        customer_id=customer,
        amount=money_pb2.Money(currency_code="USD", units=units, nanos=500_000_000),
        idempotency_key=key,
    )


def shipment_request(
    order_id: str, key: str, country: str = "NL"
) -> shipping_pb2.CreateShipmentRequest:
    return shipping_pb2.CreateShipmentRequest(
        order_id=order_id,
        address=shipping_pb2.Address(
            name="Edsger Dijkstra", street="Spui 21", city="Amsterdam", postal_code="1012 WX",
            country=country,
        ),
        items=[shipping_pb2.ShipmentItem(product_id="sku-grinder", quantity=1)],
        idempotency_key=key,
    )  # fmt: skip


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def detail(error: grpc.aio.AioRpcError, kind: Any) -> Any:
    status = rpc_status.from_call(error)
    for packed in status.details:
        found = kind()
        if packed.Unpack(found):
            return found
    raise AssertionError(f"no {kind.DESCRIPTOR.name} in {status}")


# -- payment -------------------------------------------------------------------------------


async def test_charge_retry_and_refund(payments: Any) -> None:
    order_id, key = new_order(), new_key()
    charged = (await payments.Charge(charge_request(order_id, key))).payment
    assert charged.status == payment_pb2.PAYMENT_STATUS_CHARGED
    assert (charged.amount.units, charged.amount.nanos) == (25, 500_000_000)

    again = (await payments.Charge(charge_request(order_id, key))).payment
    assert again == charged
    got = await payments.GetPayment(payment_pb2.GetPaymentRequest(payment_id=charged.payment_id))
    assert got.payment == charged

    refund = payment_pb2.RefundRequest(payment_id=charged.payment_id, idempotency_key=new_key())
    refunded = (await payments.Refund(refund)).payment
    assert refunded.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    assert refunded.HasField("refund_time")
    assert (await payments.Refund(refund)).payment == refunded

    twice = await refused(
        payments.Refund(
            payment_pb2.RefundRequest(payment_id=charged.payment_id, idempotency_key=new_key())
        )
    )
    assert twice.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await payments.ListPayments(payment_pb2.ListPaymentsRequest(order_id=order_id))
    assert list(listed.payments) == [refunded]


async def test_concurrent_retries_at_both_replicas_charge_once(payments: Any) -> None:
    order_id, key = new_order(), new_key()
    answers = await asyncio.gather(
        *(payments.Charge(charge_request(order_id, key)) for _ in range(8))
    )
    assert len({answer.payment.payment_id for answer in answers}) == 1
    listed = await payments.ListPayments(payment_pb2.ListPaymentsRequest(order_id=order_id))
    assert len(listed.payments) == 1


async def test_a_reused_key_with_another_amount_is_invalid(payments: Any) -> None:
    order_id, key = new_order(), new_key()
    await payments.Charge(charge_request(order_id, key))
    error = await refused(payments.Charge(charge_request(order_id, key, units=26)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = detail(error, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["idempotency_key"]


async def test_a_declined_customer_is_declined_on_every_retry(payments: Any) -> None:
    order_id, key = new_order(), new_key()
    for _ in range(2):
        error = await refused(payments.Charge(charge_request(order_id, key, customer="mallory")))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        failure = detail(error, error_details_pb2.PreconditionFailure)
        assert [(v.type, v.subject) for v in failure.violations] == [
            ("PAYMENT_DECLINED", "mallory")
        ]
    listed = await payments.ListPayments(payment_pb2.ListPaymentsRequest(order_id=order_id))
    assert list(listed.payments) == []


async def test_unknown_payments_are_not_found_with_their_resource(payments: Any) -> None:
    error = await refused(
        payments.Refund(payment_pb2.RefundRequest(payment_id="pay-none", idempotency_key="k"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = detail(error, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("shop.payment.v1.Payment", "pay-none")


async def test_a_charge_is_validated_at_the_boundary(payments: Any) -> None:
    error = await refused(
        payments.Charge(
            payment_pb2.ChargeRequest(
                order_id="ord-1",
                customer_id="alice",
                amount=money_pb2.Money(currency_code="XTS", units=1),
                idempotency_key="k" * 65,
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = detail(error, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["amount.currency_code", "idempotency_key"]


# -- shipping ------------------------------------------------------------------------------


async def test_a_shipment_is_tracked_through_every_status(shipping: Any) -> None:
    started = time.monotonic()
    made = (await shipping.CreateShipment(shipment_request(new_order(), new_key()))).shipment
    assert made.status == shipping_pb2.SHIPMENT_STATUS_CREATED

    stream = shipping.TrackShipment(
        shipping_pb2.TrackShipmentRequest(shipment_id=made.shipment_id), timeout=10
    )
    tracked = [response.shipment async for response in stream]

    assert [shipment.status for shipment in tracked] == [
        shipping_pb2.SHIPMENT_STATUS_CREATED,
        shipping_pb2.SHIPMENT_STATUS_PACKED,
        shipping_pb2.SHIPMENT_STATUS_SHIPPED,
        shipping_pb2.SHIPMENT_STATUS_DELIVERED,
    ]
    created = made.create_time.ToNanoseconds()
    steps = [(s.update_time.ToNanoseconds() - created) / 1e9 for s in tracked]
    assert steps == pytest.approx([0, STEP_SECONDS, 2 * STEP_SECONDS, 3 * STEP_SECONDS])
    assert time.monotonic() - started < 3 * STEP_SECONDS + 2  # it ended once delivered


async def test_a_retried_creation_makes_one_shipment(shipping: Any) -> None:
    request = shipment_request(new_order(), new_key())
    answers = await asyncio.gather(*(shipping.CreateShipment(request) for _ in range(5)))
    assert len({answer.shipment.shipment_id for answer in answers}) == 1
    other = shipment_request(request.order_id, request.idempotency_key, country="BE")
    error = await refused(shipping.CreateShipment(other))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_before_it_leaves_and_not_after(shipping: Any) -> None:
    made = (await shipping.CreateShipment(shipment_request(new_order(), new_key()))).shipment
    cancel = shipping_pb2.CancelShipmentRequest(shipment_id=made.shipment_id)
    cancelled = (await shipping.CancelShipment(cancel)).shipment
    assert cancelled.status == shipping_pb2.SHIPMENT_STATUS_CANCELLED
    assert (await shipping.CancelShipment(cancel)).shipment == cancelled
    stream = shipping.TrackShipment(
        shipping_pb2.TrackShipmentRequest(shipment_id=made.shipment_id), timeout=10
    )
    assert [r.shipment.status async for r in stream] == [shipping_pb2.SHIPMENT_STATUS_CANCELLED]

    gone = (await shipping.CreateShipment(shipment_request(new_order(), new_key()))).shipment
    await asyncio.sleep(2 * STEP_SECONDS + 0.1)  # SHIPPED by now
    error = await refused(
        shipping.CancelShipment(shipping_pb2.CancelShipmentRequest(shipment_id=gone.shipment_id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = detail(error, error_details_pb2.PreconditionFailure)
    assert [v.type for v in failure.violations] == ["SHIPMENT_STATUS"]


async def test_a_refused_country_is_a_failed_precondition(shipping: Any) -> None:
    error = await refused(
        shipping.CreateShipment(shipment_request(new_order(), new_key(), country="AQ"))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = detail(error, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("SHIPMENT_REFUSED", "AQ")]


async def test_tracking_an_unknown_shipment_is_not_found(shipping: Any) -> None:
    stream = shipping.TrackShipment(
        shipping_pb2.TrackShipmentRequest(shipment_id="shp-none"), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [response async for response in stream]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
