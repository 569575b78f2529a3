"""The payment service's domain events (shop.payment.v1.events_pb2), recorded in its
outbox by the store in the transaction that settles a new idempotency key:
PaymentCaptured for a new charge, PaymentDeclined for a declined one, PaymentRefunded
for a refund. A retry with a settled key records nothing.

Topic "payment"; a payment's events are in stream "payment-<payment_id>" (captured,
then refunded), a declined charge's in "payment-declined-<order_id>" (it has no
payment), numbered by services.common.outbox.next_version.
"""

from __future__ import annotations

import sqlite3

from google.protobuf.message import Message
from shop.payment.v1 import events_pb2

from services.common import outbox
from services.common.messaging import new_event
from services.payment.domain import Decline, Payment

__all__ = ["TOPIC", "record_captured", "record_declined", "record_refunded"]

TOPIC = "payment"


def record_captured(db: sqlite3.Connection, payment: Payment) -> None:
    """Add PaymentCaptured for the new `payment` to the outbox of `db`'s transaction."""
    message = events_pb2.PaymentCaptured(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        amount=payment.amount.to_proto(),
    )
    _record(db, f"payment-{payment.payment_id}", message, payment.create_time_ns)


def record_declined(db: sqlite3.Connection, decline: Decline) -> None:
    """Add PaymentDeclined for the new `decline` to the outbox of `db`'s transaction."""
    request = decline.request
    message = events_pb2.PaymentDeclined(
        order_id=request.order_id,
        customer_id=request.customer_id,
        amount=request.amount.to_proto(),
        reason=decline.reason,
    )
    _record(db, f"payment-declined-{request.order_id}", message, decline.time_ns)


def record_refunded(db: sqlite3.Connection, payment: Payment) -> None:
    """Add PaymentRefunded for `payment`, just refunded, to the outbox of `db`'s
    transaction."""
    message = events_pb2.PaymentRefunded(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        amount=payment.amount.to_proto(),
    )
    at = payment.refund_time_ns if payment.refund_time_ns is not None else payment.create_time_ns
    _record(db, f"payment-{payment.payment_id}", message, at)


def _record(db: sqlite3.Connection, stream: str, message: Message, time_ns: int) -> None:
    event = new_event(stream, outbox.next_version(db, stream), message, at=time_ns / 1e9)
    outbox.record(db, TOPIC, event)
