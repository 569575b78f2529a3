"""OrderService over gRPC: decode the request, run the order flow, encode.

PlaceOrder, step by step:
1. validate the request (every bad field at once; at most domain.MAX_ITEMS items);
2. a request_id is the customer's idempotency key: if it was used for this same request,
   return that order, waiting while the PlaceOrder that claimed it still runs (calling
   nobody, holding no stock); if it was used for other items, refuse it;
3. price every item with one call to the catalogue (unknown product: INVALID_ARGUMENT
   on `items[i].product_id`; mixed currencies: FAILED_PRECONDITION);
4. record a hold for a new order id, claiming the request key with it (a duplicate that
   claimed it first sends us back to step 2), then reserve the stock under it (short:
   FAILED_PRECONDITION with the inventory's violations, and the hold is dropped);
5. store the order CONFIRMED, which drops the hold. If storing fails, release the
   reservation and re-raise.
A hold left behind (a release that failed, a reservation whose outcome is unknown, a
crash) is released by the sweeper (services.order.sweeper) within about 90 s, and
its order can no longer be stored.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns them
into statuses with details, and a downstream UNAVAILABLE or DEADLINE_EXCEEDED into a
DependencyFailed (which callers do not retry: the mesh client has retried already).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh import inbound
from mesh.problems import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Problem,
    Unauthenticated,
    Unavailable,
)
from mesh.server import Caller
from services.order import domain
from services.order.clients import Catalog, Inventory
from services.order.domain import Line, Order, OrderStatus, request_fingerprint
from services.order.store import HoldClaimed, OrderStore, RequestKey
from services.order.sweeper import GRACE

__all__ = ["OrderServicer", "encode_order"]

log = logging.getLogger("services.order")

Context = grpc.aio.ServicerContext[Any, Any]

_STATUSES = {OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED}

KEY_WAIT_LIMIT = GRACE
"""Most seconds a duplicate PlaceOrder waits for the one holding its request key: by
then the sweeper has given up on that one (it crashed) and freed the key."""
WATCH_INTERVAL = 0.5
"""Seconds between a WatchOrder's looks at its order (the store is shared by every
replica, so a change made by another one is seen too)."""
_KEY_REUSED = FieldViolation(
    "request_id", "already used by this customer for an order of other items"
)


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """Orders, stored in an OrderStore, priced by a Catalog, held by an Inventory.

    Calls through the edge act for its end user, who sees and places only their own
    orders: PlaceOrder's customer is the user, whatever the body says; another
    customer's order is NOT_FOUND, as if it did not exist. Mesh identities (admin,
    other services) act for any customer.

    Args:
        caller_of: who makes a call (mesh.server.Runtime.caller_of).
        clock: the current time in nanoseconds since the epoch.
        new_order_id: makes the id of each new order.
    """

    def __init__(
        self,
        store: OrderStore,
        catalog: Catalog,
        inventory: Inventory,
        *,
        caller_of: Callable[[Context], Caller] = lambda _: Caller(identity=None, user=None),
        clock: Callable[[], int] = time.time_ns,
        new_order_id: Callable[[], str] = domain.new_order_id,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._inventory = inventory
        self._caller_of = caller_of
        self._clock = clock
        self._new_order_id = new_order_id

    async def PlaceOrder(
        self, request: order_pb2.PlaceOrderRequest, context: Context
    ) -> order_pb2.PlaceOrderResponse:
        user = self._end_user(context)
        wanted = domain.validate_order_request(
            user if user is not None else request.customer_id,
            [Line(item.product_id, item.quantity) for item in request.items],
            request.request_id,
        )
        key = (
            RequestKey(wanted.customer_id, wanted.request_id, request_fingerprint(wanted.lines))
            if wanted.request_id
            else None
        )
        while True:
            if key is not None:
                earlier = await self._earlier_order(key)
                if earlier is not None:
                    return order_pb2.PlaceOrderResponse(order=encode_order(earlier))
            prices = await self._catalog.unit_prices([line.product_id for line in wanted.lines])
            order = domain.price_order(
                wanted, prices, order_id=self._new_order_id(), create_time_ns=self._clock()
            )
            if await asyncio.to_thread(self._store.hold, order.order_id, order.create_time_ns, key):
                break
            # A concurrent duplicate claimed the key since we looked: wait for its order.
        try:
            await self._inventory.reserve(order.order_id, wanted.lines)
        except Problem:  # refused: nothing is held (any other failure leaves it unknown)
            await asyncio.to_thread(self._store.drop_hold, order.order_id)
            raise
        try:
            await asyncio.to_thread(self._store.add, order)
        except HoldClaimed:
            # Slower than the sweeper's grace. Its release may have reached inventory
            # before our reservation did: release again (a release is idempotent).
            await self._compensate(order.order_id)
            raise Unavailable("placing the order took too long; try again") from None
        except Exception:
            await self._compensate(order.order_id)
            raise
        log.info(
            "order placed",
            extra={"order_id": order.order_id, "customer_id": order.customer_id,
                   "items": len(order.items), "total_units": order.total.units,
                   "currency": order.total.currency_code},
        )  # fmt: skip
        return order_pb2.PlaceOrderResponse(order=encode_order(order))

    def _end_user(self, context: Context) -> str | None:
        """The end user a call acts for, None for a mesh identity's own call.

        Raises:
            Unauthenticated: the edge calls without a user (no token was checked).
        """
        caller = self._caller_of(context)
        if caller.via_edge and caller.user is None:
            raise Unauthenticated("orders need a signed-in user: send a bearer token")
        return caller.user

    async def _earlier_order(self, key: RequestKey) -> Order | None:
        """The order placed with `key`, waiting while the PlaceOrder that claimed it
        runs; None if the key is free (never used, or its attempt ended without an
        order, so this request may try).

        Raises:
            InvalidArgument: on `request_id`: the key was used for another request.
            Aborted: the PlaceOrder holding the key is still running at this call's
                deadline (or after KEY_WAIT_LIMIT).
        """
        remaining = inbound.remaining()
        wait = KEY_WAIT_LIMIT if remaining is None else min(remaining, KEY_WAIT_LIMIT)
        until = time.monotonic() + wait
        pause = 0.01
        while True:
            use = self._store.key_use(key.customer_id, key.request_id)
            if use is None:
                return None
            if use.fingerprint != key.fingerprint:
                raise InvalidArgument([_KEY_REUSED])
            if use.order is not None:
                return use.order
            if time.monotonic() + pause >= until:
                raise Aborted("an order with this request_id is still being placed; retry")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    async def _compensate(self, order_id: str) -> None:
        """Release the stock held for an order that was not stored. A failure is logged,
        not raised, so the caller sees why the order failed; the hold stays, and the
        sweeper releases it later."""
        try:
            await self._inventory.release(order_id)
            await asyncio.to_thread(self._store.drop_hold, order_id)
        except Exception:
            log.exception("stock held for unstored order %s is left to the sweeper", order_id)

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: Context
    ) -> order_pb2.GetOrderResponse:
        order_id = domain.require_order_id(request.order_id)
        order = self._store.get(order_id)
        user = self._end_user(context)
        if order is None or (user is not None and order.customer_id != user):
            raise NotFound(domain.ORDER, order_id)
        return order_pb2.GetOrderResponse(order=encode_order(order))

    async def WatchOrder(
        self, request: order_pb2.WatchOrderRequest, context: Context
    ) -> AsyncIterator[order_pb2.WatchOrderResponse]:
        order_id = domain.require_order_id(request.order_id)
        user = self._end_user(context)
        seen: Order | None = None
        while True:
            order = await asyncio.to_thread(self._store.get, order_id)
            if order is None or (user is not None and order.customer_id != user):
                raise NotFound(domain.ORDER, order_id)
            if order != seen:
                yield order_pb2.WatchOrderResponse(order=encode_order(order))
                seen = order
            if order.status in domain.FINAL_STATUSES:
                return
            await asyncio.sleep(WATCH_INTERVAL)

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: Context
    ) -> order_pb2.ListOrdersResponse:
        user = self._end_user(context)
        customer_id = user if user is not None else request.customer_id
        page = domain.parse_list_request(customer_id, request.page_size, request.page_token)
        orders, cursor = self._store.page(
            customer_id=customer_id, before=page.before, limit=page.size
        )
        return order_pb2.ListOrdersResponse(
            orders=[encode_order(order) for order in orders],
            next_page_token="" if cursor is None else domain.encode_page_token(cursor),
        )


def encode_order(order: Order) -> order_pb2.Order:
    create_time = timestamp_pb2.Timestamp()
    create_time.FromNanoseconds(order.create_time_ns)
    return order_pb2.Order(
        order_id=order.order_id,
        customer_id=order.customer_id,
        items=[
            order_pb2.OrderItem(
                product_id=item.product_id,
                quantity=item.quantity,
                unit_price=item.unit_price.to_proto(),
            )
            for item in order.items
        ],
        total=order.total.to_proto(),
        status=_STATUSES[order.status],
        create_time=create_time,
    )
