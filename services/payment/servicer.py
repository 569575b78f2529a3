"""PaymentService over gRPC: decode the request, apply the payment rules, encode.

Charge and Refund validate every field first, then wait the declared `delay_ms` (the
simulated processor's latency; the store is not locked meanwhile), then run as one
store transaction that settles the idempotency key. Whether a new charge is declined
is decided before that transaction, by the settings' DeclinePolicy, and kept with the
key inside it.

Calls through the edge act for its end user (mesh.server.Caller): a charge is the
user's own whatever the body says, and another customer's payment is NOT_FOUND, as if
it did not exist. Mesh identities (order, admin) act for any customer. mesh.yaml's
authz decides who may call what at all.

Failures are raised as mesh.problems exceptions; the mesh server interceptor turns
them into statuses with details.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from shop.payment.v1 import payment_pb2, payment_pb2_grpc

from mesh.problems import NotFound, Unauthenticated
from mesh.server import Caller
from services.common.money import Money
from services.payment import domain
from services.payment.domain import Payment, PaymentStatus
from services.payment.settings import PaymentSettings
from services.payment.store import PaymentStore

__all__ = ["PaymentServicer", "encode_payment"]

log = logging.getLogger("services.payment")

Context = grpc.aio.ServicerContext[Any, Any]

_STATUSES = {
    PaymentStatus.CHARGED: payment_pb2.PAYMENT_STATUS_CHARGED,
    PaymentStatus.REFUNDED: payment_pb2.PAYMENT_STATUS_REFUNDED,
}


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Payments, stored in a PaymentStore, declined and delayed as `settings` say.

    Args:
        caller_of: who makes a call (mesh.server.Runtime.caller_of).
        clock: the current time in nanoseconds since the epoch.
        new_payment_id: makes the id of each new payment.
        sleep: waits the declared delay (asyncio.sleep).
    """

    def __init__(
        self,
        store: PaymentStore,
        settings: PaymentSettings,
        *,
        caller_of: Callable[[Context], Caller] = lambda _: Caller(identity=None, user=None),
        clock: Callable[[], int] = time.time_ns,
        new_payment_id: Callable[[], str] = domain.new_payment_id,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._policy = settings.decline.policy()
        self._delay = settings.delay_ms / 1000
        self._caller_of = caller_of
        self._clock = clock
        self._new_payment_id = new_payment_id
        self._sleep = sleep

    async def Charge(
        self, request: payment_pb2.ChargeRequest, context: Context
    ) -> payment_pb2.ChargeResponse:
        user = self._end_user(context)
        charge = domain.validate_charge(
            request.order_id,
            user if user is not None else request.customer_id,
            Money.from_proto(request.amount) if request.HasField("amount") else None,
            request.idempotency_key,
        )
        await self._processing()
        payment = await asyncio.to_thread(
            self._store.charge,
            charge,
            payment_id=self._new_payment_id(),
            now_ns=self._clock(),
            decline_reason=self._policy.reason(charge),
        )
        log.info(
            "charged",
            extra={"payment_id": payment.payment_id, "order_id": payment.order_id,
                   "units": payment.amount.units, "currency": payment.amount.currency_code},
        )  # fmt: skip
        return payment_pb2.ChargeResponse(payment=encode_payment(payment))

    async def Refund(
        self, request: payment_pb2.RefundRequest, context: Context
    ) -> payment_pb2.RefundResponse:
        payment_id, key = domain.validate_refund(request.payment_id, request.idempotency_key)
        user = self._end_user(context)
        if user is not None:
            self._visible(self._store.get(payment_id), payment_id, user)
        await self._processing()
        payment = await asyncio.to_thread(self._store.refund, payment_id, key, self._clock())
        log.info("refunded", extra={"payment_id": payment.payment_id})
        return payment_pb2.RefundResponse(payment=encode_payment(payment))

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.GetPaymentResponse:
        payment_id = domain.require_payment_id(request.payment_id)
        user = self._end_user(context)
        payment = self._visible(self._store.get(payment_id), payment_id, user)
        return payment_pb2.GetPaymentResponse(payment=encode_payment(payment))

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: Context
    ) -> payment_pb2.ListPaymentsResponse:
        page = domain.parse_list_request(request.order_id, request.page_size, request.page_token)
        user = self._end_user(context)
        payments, cursor = self._store.page(
            order_id=page.order_id, customer_id=user or "", before=page.before, limit=page.size
        )
        return payment_pb2.ListPaymentsResponse(
            payments=[encode_payment(payment) for payment in payments],
            next_page_token="" if cursor is None else domain.encode_page_token(cursor),
        )

    async def _processing(self) -> None:
        """The simulated processor's latency (settings.delay_ms)."""
        if self._delay > 0:
            await self._sleep(self._delay)

    def _end_user(self, context: Context) -> str | None:
        """The end user a call acts for, None for a mesh identity's own call.

        Raises:
            Unauthenticated: the edge calls without a user (no token was checked).
        """
        caller = self._caller_of(context)
        if caller.via_edge and caller.user is None:
            raise Unauthenticated("payments need a signed-in user: send a bearer token")
        return caller.user

    @staticmethod
    def _visible(payment: Payment | None, payment_id: str, user: str | None) -> Payment:
        """`payment`, if it exists and `user` (None: anyone) may see it.

        Raises:
            NotFound: it does not exist, or it is another customer's.
        """
        if payment is None or (user is not None and payment.customer_id != user):
            raise NotFound(domain.PAYMENT, payment_id)
        return payment


def encode_payment(payment: Payment) -> payment_pb2.Payment:
    message = payment_pb2.Payment(
        payment_id=payment.payment_id,
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        amount=payment.amount.to_proto(),
        status=_STATUSES[payment.status],
        create_time=_timestamp(payment.create_time_ns),
    )
    if payment.refund_time_ns is not None:
        message.refund_time.CopyFrom(_timestamp(payment.refund_time_ns))
    return message


def _timestamp(time_ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time_ns)
    return stamp
