"""The order service's calls to other services, one small typed helper each (like
Online Boutique's frontend/rpc.go).

The servicer depends on the `Catalog` and `Inventory` protocols, so unit tests pass
fakes. The gRPC implementations translate the downstream statuses the order flow
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
from shop.product.v1 import product_pb2, product_pb2_grpc

from mesh.client import StubChannel
from mesh.problems import FailedPrecondition, PreconditionViolation
from services.order.domain import Line, Money

__all__ = [
    "Catalog",
    "GrpcCatalog",
    "GrpcInventory",
    "Inventory",
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
