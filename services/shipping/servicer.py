"""ShippingService over gRPC: decode the request, apply the shipping rules, encode.

CreateShipment validates every field first, then waits the declared `delay_ms` (the
simulated carrier's latency; the store is not locked meanwhile), then runs as one store
transaction that settles the idempotency key. Whether a new shipment is refused is
decided before that transaction, by the settings' RefusalPolicy, and kept with the key
inside it.

Every answer shows a shipment as it stands at the time of the answer (its status is
computed from the clock: services.shipping.domain). TrackShipment sends it, then sleeps
until its next scheduled change, or at most TRACK_INTERVAL (a cancellation by another
instance is seen within that), and sends it again each time its status has changed,
until the status is final; the call's deadline ends it earlier.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns
them into statuses with details.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from shop.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from mesh.problems import NotFound
from services.shipping import domain
from services.shipping.domain import Address, Progress, Shipment, ShipmentItem, ShipmentStatus
from services.shipping.settings import ShippingSettings
from services.shipping.store import ShippingStore

__all__ = ["TRACK_INTERVAL", "ShippingServicer", "decode_address", "encode_shipment"]

log = logging.getLogger("services.shipping")

Context = grpc.aio.ServicerContext[Any, Any]

TRACK_INTERVAL = 0.5
"""Most seconds between a TrackShipment's looks at its shipment."""
_LATE = 0.001
"""Seconds a tracker sleeps past a scheduled change, so that it wakes after it."""

_STATUSES = {
    ShipmentStatus.CREATED: shipping_pb2.SHIPMENT_STATUS_CREATED,
    ShipmentStatus.PACKED: shipping_pb2.SHIPMENT_STATUS_PACKED,
    ShipmentStatus.SHIPPED: shipping_pb2.SHIPMENT_STATUS_SHIPPED,
    ShipmentStatus.DELIVERED: shipping_pb2.SHIPMENT_STATUS_DELIVERED,
    ShipmentStatus.CANCELLED: shipping_pb2.SHIPMENT_STATUS_CANCELLED,
}


class ShippingServicer(shipping_pb2_grpc.ShippingServiceServicer):
    """Shipments, stored in a ShippingStore, paced, refused and delayed as `settings`
    say.

    Args:
        clock: the current time in nanoseconds since the epoch.
        new_shipment_id: makes the id of each new shipment.
        sleep: waits (asyncio.sleep): the declared delay, and a tracker between looks.
        track_interval: most seconds between a TrackShipment's looks at its shipment.
    """

    def __init__(
        self,
        store: ShippingStore,
        settings: ShippingSettings,
        *,
        clock: Callable[[], int] = time.time_ns,
        new_shipment_id: Callable[[], str] = domain.new_shipment_id,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        track_interval: float = TRACK_INTERVAL,
    ) -> None:
        self._store = store
        self._policy = settings.fail.policy()
        self._step_ns = max(1, round(settings.step_seconds * 1e9))
        self._delay = settings.delay_ms / 1000
        self._clock = clock
        self._new_shipment_id = new_shipment_id
        self._sleep = sleep
        self._track_interval = track_interval

    async def CreateShipment(
        self, request: shipping_pb2.CreateShipmentRequest, context: Context
    ) -> shipping_pb2.CreateShipmentResponse:
        wanted = domain.validate_shipment(
            request.order_id,
            decode_address(request.address) if request.HasField("address") else None,
            [ShipmentItem(item.product_id, item.quantity) for item in request.items],
            request.idempotency_key,
        )
        await self._processing()
        shipment = await asyncio.to_thread(
            self._store.create,
            wanted,
            shipment_id=self._new_shipment_id(),
            now_ns=self._clock(),
            step_ns=self._step_ns,
            refusal=self._policy.refusal(wanted),
        )
        log.info(
            "shipment created",
            extra={"shipment_id": shipment.shipment_id, "order_id": shipment.order_id,
                   "country": shipment.address.country, "items": len(shipment.items)},
        )  # fmt: skip
        return shipping_pb2.CreateShipmentResponse(shipment=self._encode(shipment))

    async def CancelShipment(
        self, request: shipping_pb2.CancelShipmentRequest, context: Context
    ) -> shipping_pb2.CancelShipmentResponse:
        shipment_id = domain.require_shipment_id(request.shipment_id)
        await self._processing()
        shipment = await asyncio.to_thread(self._store.cancel, shipment_id, self._clock())
        log.info("shipment cancelled", extra={"shipment_id": shipment_id})
        return shipping_pb2.CancelShipmentResponse(shipment=self._encode(shipment))

    async def GetShipment(
        self, request: shipping_pb2.GetShipmentRequest, context: Context
    ) -> shipping_pb2.GetShipmentResponse:
        shipment = self._existing(domain.require_shipment_id(request.shipment_id))
        return shipping_pb2.GetShipmentResponse(shipment=self._encode(shipment))

    async def TrackShipment(
        self, request: shipping_pb2.TrackShipmentRequest, context: Context
    ) -> AsyncIterator[shipping_pb2.TrackShipmentResponse]:
        shipment_id = domain.require_shipment_id(request.shipment_id)
        seen: Progress | None = None
        while True:
            shipment = self._existing(shipment_id)
            now = self._clock()
            progress = shipment.progress(now)
            if progress != seen:
                yield shipping_pb2.TrackShipmentResponse(
                    shipment=encode_shipment(shipment, progress)
                )
                seen = progress
            if progress.status in domain.FINAL_STATUSES:
                return
            wait = self._track_interval
            change = shipment.next_change_ns(now)
            if change is not None:
                wait = min(wait, max(change - now, 0) / 1e9 + _LATE)
            await self._sleep(wait)

    async def _processing(self) -> None:
        """The simulated carrier's latency (settings.delay_ms)."""
        if self._delay > 0:
            await self._sleep(self._delay)

    def _existing(self, shipment_id: str) -> Shipment:
        """The shipment with this id.

        Raises:
            NotFound: there is none.
        """
        shipment = self._store.get(shipment_id)
        if shipment is None:
            raise NotFound(domain.SHIPMENT, shipment_id)
        return shipment

    def _encode(self, shipment: Shipment) -> shipping_pb2.Shipment:
        return encode_shipment(shipment, shipment.progress(self._clock()))


def decode_address(address: shipping_pb2.Address) -> Address:
    return Address(
        name=address.name,
        street=address.street,
        city=address.city,
        postal_code=address.postal_code,
        country=address.country,
    )


def encode_shipment(shipment: Shipment, progress: Progress) -> shipping_pb2.Shipment:
    """`shipment` as it stands with `progress` (Shipment.progress at some moment)."""
    address = shipment.address
    return shipping_pb2.Shipment(
        shipment_id=shipment.shipment_id,
        order_id=shipment.order_id,
        address=shipping_pb2.Address(
            name=address.name,
            street=address.street,
            city=address.city,
            postal_code=address.postal_code,
            country=address.country,
        ),
        items=[
            shipping_pb2.ShipmentItem(product_id=item.product_id, quantity=item.quantity)
            for item in shipment.items
        ],
        status=_STATUSES[progress.status],
        create_time=_timestamp(shipment.create_time_ns),
        update_time=_timestamp(progress.since_ns),
    )


def _timestamp(time_ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time_ns)
    return stamp
