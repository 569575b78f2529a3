"""OrderService over gRPC: decode the request, run the order flow, encode.

PlaceOrder, step by step:
1. validate the request (every bad field at once; at most domain.MAX_ITEMS items; the
   shipping address's form, DEFAULT_ADDRESS when it has none);
2. a request_id is the customer's idempotency key: if it was used for this same request,
   return that order, waiting while its saga still runs (calling nobody); if it was used
   for other items, refuse it; a CANCELLED order's key is free again;
3. price every item with one call to the catalogue (unknown product: INVALID_ARGUMENT
   on `items[i].product_id`; mixed currencies: FAILED_PRECONDITION);
4. record the order PENDING with its saga's steps and this call's lease on it, claiming
   the request key with it (a duplicate that claimed it first sends us back to step 2);
5. drive its saga (services.order.saga): reserve the stock, charge, ship. CONFIRMED: the
   order is the answer. CANCELLED (a step refused, the done ones undone): the refusal's
   status and details (stock short: FAILED_PRECONDITION with the inventory's
   violations), and a ResourceInfo naming the order. Still PENDING (a step's outcome is
   unknown): DependencyFailed with the order id; the resumer (services.order.resumer)
   finishes it once this call's lease expires.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns them
into statuses with details, and a downstream UNAVAILABLE or DEADLINE_EXCEEDED into a
DependencyFailed (which callers do not retry: the mesh client has retried already).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh import inbound
from mesh.problems import Aborted, FieldViolation, InvalidArgument, NotFound, Unauthenticated
from mesh.server import Caller
from services.order import domain
from services.order.clients import Catalog, encode_address
from services.order.domain import (
    Address,
    Line,
    Order,
    OrderStatus,
    SagaStep,
    StepStatus,
    request_fingerprint,
)
from services.order.saga import OrderCancelled, OrderPending, OrderSaga, describe
from services.order.store import OrderStore, RequestKey

__all__ = ["OrderServicer", "encode_order"]

log = logging.getLogger("services.order")

Context = grpc.aio.ServicerContext[Any, Any]

_STATUSES = {
    OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}
_STEP_STATUSES = {
    StepStatus.PENDING: order_pb2.SAGA_STEP_STATUS_PENDING,
    StepStatus.DONE: order_pb2.SAGA_STEP_STATUS_DONE,
    StepStatus.FAILED: order_pb2.SAGA_STEP_STATUS_FAILED,
    StepStatus.ABANDONED: order_pb2.SAGA_STEP_STATUS_FAILED,  # and being undone
    StepStatus.COMPENSATED: order_pb2.SAGA_STEP_STATUS_COMPENSATED,
    StepStatus.COMPENSATION_FAILED: order_pb2.SAGA_STEP_STATUS_COMPENSATION_FAILED,
}

KEY_WAIT_LIMIT = 60.0
"""Most seconds a duplicate PlaceOrder waits for the saga of the order placed with its
request key (a saga whose step has an unknown outcome may take much longer)."""
WATCH_INTERVAL = 0.5
"""Seconds between a WatchOrder's looks at its order (the store is shared by every
replica, so a change made by another one is seen too)."""
_KEY_REUSED = FieldViolation(
    "request_id", "already used by this customer for an order of other items"
)


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    """Orders, stored in an OrderStore, priced by a Catalog, placed by an OrderSaga.

    Calls through the edge act for its end user, who sees and places only their own
    orders: PlaceOrder's customer is the user, whatever the body says; another
    customer's order is NOT_FOUND, as if it did not exist. Mesh identities (admin,
    other services) act for any customer.

    Args:
        caller_of: who makes a call (mesh.server.Runtime.caller_of).
        clock: the current time in nanoseconds since the epoch.
        new_order_id: makes the id of each new order.
        new_owner: makes the lease owner of each PlaceOrder's saga.
    """

    def __init__(
        self,
        store: OrderStore,
        catalog: Catalog,
        saga: OrderSaga,
        *,
        caller_of: Callable[[Context], Caller] = lambda _: Caller(identity=None, user=None),
        clock: Callable[[], int] = time.time_ns,
        new_order_id: Callable[[], str] = domain.new_order_id,
        new_owner: Callable[[], str] = lambda: f"place-{secrets.token_hex(6)}",
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._saga = saga
        self._new_owner = new_owner
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
            decode_address(request.shipping_address)
            if request.HasField("shipping_address")
            else None,
        )
        key = (
            RequestKey(wanted.customer_id, wanted.request_id, request_fingerprint(wanted.lines))
            if wanted.request_id
            else None
        )
        owner = self._new_owner()
        while True:
            if key is not None:
                earlier = await self._earlier_order(key)
                if earlier is not None:
                    return order_pb2.PlaceOrderResponse(order=encode_order(earlier))
            prices = await self._catalog.unit_prices([line.product_id for line in wanted.lines])
            order = domain.price_order(
                wanted, prices, order_id=self._new_order_id(), create_time_ns=self._clock()
            )
            lease = self._saga.lease_until(self._clock())
            if await asyncio.to_thread(self._store.begin, order, owner=owner, lease_until_ns=lease):
                break
            # A concurrent duplicate claimed the key since we looked: wait for its order.
        outcome = await self._saga.drive(order.order_id, owner)
        placed = outcome.order
        log.info(
            "order placed",
            extra={"order_id": placed.order_id, "customer_id": placed.customer_id,
                   "status": placed.status.name, "items": len(placed.items),
                   "total_units": placed.total.units, "currency": placed.total.currency_code},
        )  # fmt: skip
        if placed.status is OrderStatus.CONFIRMED:
            return order_pb2.PlaceOrderResponse(order=encode_order(placed))
        if placed.status is OrderStatus.CANCELLED:
            assert outcome.refusal is not None
            raise OrderCancelled(placed.order_id, outcome.refusal)
        if isinstance(outcome.unknown, grpc.aio.AioRpcError):
            code = outcome.unknown.code()
            raise OrderPending(placed.order_id, code, outcome.unknown.details() or code.name)
        raise OrderPending(
            placed.order_id,
            grpc.StatusCode.UNAVAILABLE,
            "a step's outcome is not known yet"
            if outcome.unknown is None
            else describe(outcome.unknown),
        )

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
        """The order placed with `key`, waiting while its saga runs; None if the key is
        free (never used, or its order was CANCELLED, so this request may try).

        Raises:
            InvalidArgument: on `request_id`: the key was used for another request.
            Aborted: the order holding the key is still PENDING at this call's deadline
                (or after KEY_WAIT_LIMIT).
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
            if use.order.status is not OrderStatus.PENDING:
                return use.order
            if time.monotonic() + pause >= until:
                raise Aborted("an order with this request_id is still being placed; retry")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

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


def decode_address(address: Any) -> Address:
    return Address(
        name=address.name,
        street=address.street,
        city=address.city,
        postal_code=address.postal_code,
        country=address.country,
    )


def _timestamp(time_ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time_ns)
    return stamp


def _encode_step(step: SagaStep) -> order_pb2.SagaStep:
    return order_pb2.SagaStep(
        name=step.name,
        status=_STEP_STATUSES[step.status],
        detail=step.detail,
        update_time=_timestamp(step.update_time_ns),
        attempts=step.attempts,
    )


def encode_order(order: Order) -> order_pb2.Order:
    message = order_pb2.Order(
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
        create_time=_timestamp(order.create_time_ns),
        saga=[_encode_step(step) for step in order.saga],
        payment_id=order.payment_id,
        shipment_id=order.shipment_id,
        failure_reason=order.failure_reason,
    )
    if order.address is not None:
        message.shipping_address.CopyFrom(encode_address(order.address))
    return message
