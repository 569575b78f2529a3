"""The order service's calls to other services, one small typed helper each (like
Online Boutique's frontend/rpc.go).

The servicer and the saga depend on the `Catalog`, `Inventory`, `Payments` and
`Shipping` protocols, so unit tests pass fakes. The gRPC implementations translate the downstream statuses the order flow
expects into domain answers or mesh.problems; any other AioRpcError propagates, and
the mesh server interceptor keeps UNAVAILABLE and DEADLINE_EXCEEDED as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status  # type: ignore[import-untyped]
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_pb2_grpc
from shop.product.v1 import product_pb2, product_pb2_grpc
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from mesh.client import StubChannel
from mesh.problems import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from services.order.domain import Address, Line, Money

__all__ = [
    "Catalog",
    "GrpcCatalog",
    "GrpcInventory",
    "GrpcPayments",
    "GrpcShipping",
    "Inventory",
    "Payments",
    "Shipping",
    "encode_address",
    "field_violations",
    "precondition_violations",
]

Channel = StubChannel  # a mesh client's channel, or a plain grpc.aio.Channel


class Catalog(Protocol):
    """Where unit prices come from."""

    async def unit_prices(self, product_ids: Sequence[str]) -> list[Money | None]:
        """Each product's current price, in the order asked, None for one that does not
        exist; in one call, whatever the number of products."""
        ...


class Inventory(Protocol):
    """Where an order's stock is held."""

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        """Hold every line's units for the order, or none.

        Raises:
            FailedPrecondition: stock is short; the violations name each short product.
        """
        ...

    async def release(self, order_id: str) -> None:
        """Give the order's units back; nothing happens if it holds none."""
        ...


class Payments(Protocol):
    """Where an order is paid."""

    async def charge(self, order_id: str, customer_id: str, amount: Money, key: str) -> str:
        """Charge the customer for the order; the payment id. Idempotent by `key`.

        Raises:
            FailedPrecondition: declined (type PAYMENT_DECLINED); nothing was charged.
        """
        ...

    async def refund(self, payment_id: str, key: str) -> None:
        """Give the payment's whole amount back. Idempotent by `key`.

        Raises:
            FailedPrecondition: it cannot be refunded (refunded with another key).
        """
        ...


class Shipping(Protocol):
    """Where an order is shipped."""

    async def create(self, order_id: str, address: Address, lines: Sequence[Line], key: str) -> str:
        """Ship the lines to the address; the shipment id. Idempotent by `key`.

        Raises:
            FailedPrecondition: refused by the carrier (type SHIPMENT_REFUSED).
            InvalidArgument: the carrier does not take the address (on
                `shipping_address.<line>`).
        """
        ...

    async def cancel(self, shipment_id: str) -> None:
        """Stop the shipment; nothing happens if it is cancelled or does not exist.

        Raises:
            FailedPrecondition: it has left already (type SHIPMENT_STATUS).
        """
        ...


class GrpcCatalog:
    """Catalog over ProductService.BatchGetProducts."""

    def __init__(self, channel: Channel, *, timeout: float | None = None) -> None:
        # Generated stubs have no .pyi; their methods return Any.
        self._stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout

    async def unit_prices(self, product_ids: Sequence[str]) -> list[Money | None]:
        response = await self._stub.BatchGetProducts(
            product_pb2.BatchGetProductsRequest(product_ids=product_ids), timeout=self._timeout
        )
        prices = {
            product.product_id: Money.from_proto(product.price) for product in response.products
        }
        return [prices.get(product_id) for product_id in product_ids]


class GrpcInventory:
    """Inventory over InventoryService.ReserveStock and ReleaseStock."""

    def __init__(self, channel: Channel, *, timeout: float | None = None) -> None:
        self._stub = inventory_pb2_grpc.InventoryServiceStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> None:
        request = inventory_pb2.ReserveStockRequest(
            order_id=order_id,
            items=[
                inventory_pb2.ReservationItem(product_id=line.product_id, quantity=line.quantity)
                for line in lines
            ],
        )
        try:
            await self._stub.ReserveStock(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(
                    "not enough stock", precondition_violations(error)
                ) from error
            raise

    async def release(self, order_id: str) -> None:
        try:
            await self._stub.ReleaseStock(
                inventory_pb2.ReleaseStockRequest(order_id=order_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise


class GrpcPayments:
    """Payments over PaymentService.Charge and Refund."""

    def __init__(self, channel: Channel, *, timeout: float | None = None) -> None:
        self._stub = payment_pb2_grpc.PaymentServiceStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout

    async def charge(self, order_id: str, customer_id: str, amount: Money, key: str) -> str:
        request = payment_pb2.ChargeRequest(
            order_id=order_id,
            customer_id=customer_id,
            amount=amount.to_proto(),
            idempotency_key=key,
        )
        try:
            response = await self._stub.Charge(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(
                    "the payment was declined", precondition_violations(error)
                ) from error
            raise
        return str(response.payment.payment_id)

    async def refund(self, payment_id: str, key: str) -> None:
        request = payment_pb2.RefundRequest(payment_id=payment_id, idempotency_key=key)
        try:
            await self._stub.Refund(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(
                    "the payment cannot be refunded", precondition_violations(error)
                ) from error
            raise


class GrpcShipping:
    """Shipping over ShippingService.CreateShipment and CancelShipment."""

    def __init__(self, channel: Channel, *, timeout: float | None = None) -> None:
        self._stub = shipping_pb2_grpc.ShippingServiceStub(channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout

    async def create(self, order_id: str, address: Address, lines: Sequence[Line], key: str) -> str:
        request = shipping_pb2.CreateShipmentRequest(
            order_id=order_id,
            address=encode_address(address),
            items=[
                shipping_pb2.ShipmentItem(product_id=line.product_id, quantity=line.quantity)
                for line in lines
            ],
            idempotency_key=key,
        )
        try:
            response = await self._stub.CreateShipment(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(
                    "the shipment was refused", precondition_violations(error)
                ) from error
            if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
                # The order checked the request's form; this is the carrier's own rule
                # (a country it does not know): said of the order's field.
                violations = [
                    FieldViolation(
                        v.field.replace("address.", "shipping_address.", 1), v.description
                    )
                    for v in field_violations(error)
                    if v.field.startswith("address.")
                ]
                raise InvalidArgument(
                    violations or [FieldViolation("shipping_address", "refused by the carrier")]
                ) from error
            raise
        return str(response.shipment.shipment_id)

    async def cancel(self, shipment_id: str) -> None:
        request = shipping_pb2.CancelShipmentRequest(shipment_id=shipment_id)
        try:
            await self._stub.CancelShipment(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise FailedPrecondition(
                    "the shipment cannot be cancelled", precondition_violations(error)
                ) from error
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise


def encode_address(address: Address) -> shipping_pb2.Address:
    return shipping_pb2.Address(
        name=address.name,
        street=address.street,
        city=address.city,
        postal_code=address.postal_code,
        country=address.country,
    )


def _status_details(error: grpc.aio.AioRpcError) -> list[object]:
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return []
    return [] if status is None else list(status.details)


def field_violations(error: grpc.aio.AioRpcError) -> list[FieldViolation]:
    """The BadRequest field violations in a failed call's google.rpc.Status details."""
    violations: list[FieldViolation] = []
    for detail in _status_details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):  # type: ignore[attr-defined]
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)  # type: ignore[attr-defined]
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return violations


def precondition_violations(error: grpc.aio.AioRpcError) -> list[PreconditionViolation]:
    """The PreconditionFailure violations in a failed call's google.rpc.Status details
    (none if the status carries no details or they do not match the call's status)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return []
    if status is None:
        return []
    violations: list[PreconditionViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            violations.extend(
                PreconditionViolation(v.type, v.subject, v.description) for v in failure.violations
            )
    return violations
