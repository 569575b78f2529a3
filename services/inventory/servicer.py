"""InventoryService over gRPC: decode the request, apply the stock rules, encode.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns
them into statuses with details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from mesh.problems import NotFound
from services.inventory import domain
from services.inventory.domain import Reservation, ReservationItem, ReservationState, StockLevel
from services.inventory.store import InventoryStore

__all__ = ["InventoryServicer", "encode_reservation", "encode_stock"]

Context = grpc.aio.ServicerContext[Any, Any]

_STATES = {
    ReservationState.ACTIVE: inventory_pb2.RESERVATION_STATE_ACTIVE,
    ReservationState.RELEASED: inventory_pb2.RESERVATION_STATE_RELEASED,
}


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    """Stock and reservations, backed by an InventoryStore.

    `on_changed` is called after each write that may have changed stock (the outbox
    relay's `notify`, so its StockChanged events are published at once).
    """

    def __init__(
        self, store: InventoryStore, *, on_changed: Callable[[], None] | None = None
    ) -> None:
        self._store = store
        self._on_changed = on_changed or (lambda: None)

    async def GetStock(
        self, request: inventory_pb2.GetStockRequest, context: Context
    ) -> inventory_pb2.GetStockResponse:
        product_id = domain.validate_product_id(request.product_id)
        level = self._store.stock(product_id)
        return inventory_pb2.GetStockResponse(stock=encode_stock(level))

    async def AdjustStock(
        self, request: inventory_pb2.AdjustStockRequest, context: Context
    ) -> inventory_pb2.AdjustStockResponse:
        domain.validate_adjustment(request.product_id, request.delta, request.reason)
        level = await asyncio.to_thread(
            self._store.adjust, request.product_id, request.delta, request.reason
        )
        self._on_changed()
        return inventory_pb2.AdjustStockResponse(stock=encode_stock(level))

    async def ReserveStock(
        self, request: inventory_pb2.ReserveStockRequest, context: Context
    ) -> inventory_pb2.ReserveStockResponse:
        items = [ReservationItem(item.product_id, item.quantity) for item in request.items]
        domain.validate_reservation(request.order_id, items)
        reservation = await asyncio.to_thread(self._store.reserve, request.order_id, items)
        self._on_changed()
        return inventory_pb2.ReserveStockResponse(reservation=encode_reservation(reservation))

    async def ReleaseStock(
        self, request: inventory_pb2.ReleaseStockRequest, context: Context
    ) -> inventory_pb2.ReleaseStockResponse:
        order_id = domain.require_order_id(request.order_id)
        reservation = await asyncio.to_thread(self._store.release, order_id)
        self._on_changed()
        return inventory_pb2.ReleaseStockResponse(reservation=encode_reservation(reservation))

    async def GetReservation(
        self, request: inventory_pb2.GetReservationRequest, context: Context
    ) -> inventory_pb2.GetReservationResponse:
        order_id = domain.require_order_id(request.order_id)
        reservation = self._store.reservation(order_id)
        if reservation is None:
            raise NotFound(domain.RESERVATION, order_id)
        return inventory_pb2.GetReservationResponse(reservation=encode_reservation(reservation))


def encode_stock(level: StockLevel) -> inventory_pb2.StockLevel:
    return inventory_pb2.StockLevel(
        product_id=level.product_id,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
    )


def encode_reservation(reservation: Reservation) -> inventory_pb2.Reservation:
    return inventory_pb2.Reservation(
        order_id=reservation.order_id,
        items=[
            inventory_pb2.ReservationItem(product_id=item.product_id, quantity=item.quantity)
            for item in reservation.items
        ],
        state=_STATES[reservation.state],
    )
