"""The order service's domain events (shop.order.v1.events_pb2), recorded in its outbox
by the store in the transaction of the change they report: OrderPlaced when an order
is recorded PENDING, then one OrderConfirmed or OrderCancelled when its saga ends.

Every event of an order is in stream "order-<order_id>" on topic "order", numbered by
services.common.outbox.next_version (OrderPlaced is 1, the final event 2). No I/O
beyond the outbox rows of the caller's transaction.
"""

from __future__ import annotations

import sqlite3

from google.protobuf.message import Message
from shop.order.v1 import events_pb2

from services.common import outbox
from services.common.messaging import new_event
from services.order.domain import Order, OrderStatus, StepStatus

__all__ = ["TOPIC", "failed_step", "record_final", "record_placed", "stream"]

TOPIC = "order"


def stream(order_id: str) -> str:
    """The stream of an order's events."""
    return f"order-{order_id}"


def record_placed(db: sqlite3.Connection, order: Order) -> None:
    """Add OrderPlaced for `order`, just recorded, to the outbox of `db`'s transaction."""
    message = events_pb2.OrderPlaced(
        order_id=order.order_id,
        customer_id=order.customer_id,
        lines=[
            events_pb2.OrderLine(
                product_id=item.product_id,
                quantity=item.quantity,
                unit_price=item.unit_price.to_proto(),
            )
            for item in order.items
        ],
        total=order.total.to_proto(),
    )
    _record(db, order.order_id, message, at=order.create_time_ns / 1e9)


def record_final(db: sqlite3.Connection, order: Order) -> None:
    """Add OrderConfirmed or OrderCancelled for `order`, whose saga has just ended (it
    is CONFIRMED or CANCELLED), to the outbox of `db`'s transaction."""
    message: Message
    if order.status is OrderStatus.CONFIRMED:
        message = events_pb2.OrderConfirmed(
            order_id=order.order_id,
            customer_id=order.customer_id,
            total=order.total.to_proto(),
            payment_id=order.payment_id,
            shipment_id=order.shipment_id,
        )
    elif order.status is OrderStatus.CANCELLED:
        message = events_pb2.OrderCancelled(
            order_id=order.order_id,
            customer_id=order.customer_id,
            total=order.total.to_proto(),
            failed_step=failed_step(order),
            reason=order.failure_reason,
        )
    else:
        raise ValueError(f"order {order.order_id} is {order.status.name}, not final")
    _record(db, order.order_id, message, at=None)


def failed_step(order: Order) -> str:
    """The saga step that made `order` fail: the last one that ran. Steps run in order
    and stop at the first refusal (or abandoned step), so every later step is still
    PENDING, whatever undoing did to the earlier ones; "" if none ran."""
    ran = [step.name for step in order.saga if step.status is not StepStatus.PENDING]
    return ran[-1] if ran else ""


def _record(db: sqlite3.Connection, order_id: str, message: Message, *, at: float | None) -> None:
    name = stream(order_id)
    event = new_event(name, outbox.next_version(db, name), message, at=at)
    outbox.record(db, TOPIC, event)
