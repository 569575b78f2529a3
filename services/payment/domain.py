"""Payment rules: request validation, the decline policy, what a repeated key means,
refunds. No I/O, no gRPC.

A charge's outcome is decided once per idempotency key and kept: a Payment (the money
moved) or a Decline (it did not, and no payment exists). The store looks the key up
inside its write transaction and asks `charge_outcome` what a request with that key
gets; a new key gets whatever the DeclinePolicy says at that moment, and keeps it, so a
change of the settings never charges a key that was declined.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Collection
from dataclasses import dataclass, replace

from mesh.problems import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from services.common import paging
from services.common.ids import CUSTOMER_ID, REQUEST_ID, RESOURCE_ID, key_share
from services.common.money import Money
from services.payment.currencies import CURRENCIES

__all__ = [
    "PAYMENT",
    "PAYMENT_DECLINED",
    "PAYMENT_STATUS",
    "ChargeRequest",
    "Decline",
    "DeclinePolicy",
    "Page",
    "Payment",
    "PaymentStatus",
    "charge_outcome",
    "declined",
    "encode_page_token",
    "key_share",
    "new_payment_id",
    "parse_list_request",
    "refund_again",
    "refunded",
    "require_payment_id",
    "validate_charge",
    "validate_refund",
]

PAYMENT = "shop.payment.v1.Payment"
"""Resource type named in NOT_FOUND details."""

PAYMENT_DECLINED = "PAYMENT_DECLINED"
"""PreconditionViolation type of a charge the processor declined."""

PAYMENT_STATUS = "PAYMENT_STATUS"
"""PreconditionViolation type of a payment whose status does not allow the request."""

_PAGE_KIND = "payment"
_KEY_REUSED = "already used for another {}"


class PaymentStatus(enum.Enum):
    """Where a payment stands."""

    CHARGED = 1
    REFUNDED = 2


@dataclass(frozen=True)
class ChargeRequest:
    """A validated Charge request. Two requests with one key are the same charge when
    everything else is equal (`same_charge`)."""

    order_id: str
    customer_id: str
    amount: Money
    idempotency_key: str

    def same_charge(self, other: ChargeRequest) -> bool:
        return (self.order_id, self.customer_id, self.amount) == (
            other.order_id,
            other.customer_id,
            other.amount,
        )


@dataclass(frozen=True)
class Payment:
    """Money taken from a customer for an order, and the keys of the Charge that took it
    and of the Refund that gave it back ("" if none)."""

    payment_id: str
    order_id: str
    customer_id: str
    amount: Money
    status: PaymentStatus
    create_time_ns: int
    charge_key: str
    refund_key: str = ""
    refund_time_ns: int | None = None

    @property
    def charge(self) -> ChargeRequest:
        """The Charge request that made this payment."""
        return ChargeRequest(self.order_id, self.customer_id, self.amount, self.charge_key)


@dataclass(frozen=True)
class Decline:
    """A charge the processor declined, kept by its key: no money moved, and a retry
    with the key is declined again."""

    request: ChargeRequest
    reason: str
    time_ns: int


@dataclass(frozen=True)
class DeclinePolicy:
    """Which charges the simulated processor declines: every charge of `customers`, and
    `share` (0 to 1) of all others, picked by the hash of the idempotency key, so that
    the answer for one key is always the same; and every charge `over` a limit."""

    customers: Collection[str] = ()
    share: float = 0.0
    over: Money | None = None

    def reason(self, request: ChargeRequest) -> str | None:
        """Why the charge is declined, or None if it is not."""
        if request.customer_id in self.customers:
            return "the processor declines every charge of this customer"
        limit = self.over
        if (
            limit is not None
            and request.amount.currency_code == limit.currency_code
            and request.amount.to_nanos() > limit.to_nanos()
        ):
            return f"the charge is over the card limit of {limit.units}.{limit.nanos // 10**7:02d} {limit.currency_code}"
        if key_share(request.idempotency_key) < self.share:
            return "the processor declined the charge"
        return None


@dataclass(frozen=True)
class Page:
    """One validated ListPayments request: at most `size` payments of `order_id` older
    than cursor `before` (None: from the newest)."""

    order_id: str
    size: int
    before: int | None


def new_payment_id() -> str:
    """A fresh payment id: "pay-" and 16 hex digits."""
    return f"pay-{secrets.token_hex(8)}"


def require_payment_id(payment_id: str) -> str:
    """The id to look up, if well formed (an unknown one is then simply not found).

    Raises:
        InvalidArgument: on `payment_id`.
    """
    return RESOURCE_ID.check(payment_id, "payment_id")


def validate_charge(
    order_id: str, customer_id: str, amount: Money | None, idempotency_key: str
) -> ChargeRequest:
    """Check a Charge request: `amount` None means the request has none.

    Raises:
        InvalidArgument: listing every bad field (`order_id`, `amount.currency_code`,
            `amount.nanos`, `amount`, `idempotency_key`, ...).
    """
    found = RESOURCE_ID.violations(order_id, "order_id")
    found += CUSTOMER_ID.violations(customer_id, "customer_id")
    if amount is None:
        found.append(FieldViolation("amount", "required"))
    else:
        found += _amount_violations(amount)
    found += REQUEST_ID.violations(idempotency_key, "idempotency_key")
    if found or amount is None:
        raise InvalidArgument(found)
    return ChargeRequest(order_id, customer_id, amount, idempotency_key)


def _amount_violations(amount: Money) -> list[FieldViolation]:
    found = [v for v in amount.price_violations("amount") if v.field != "amount.currency_code"]
    if amount.currency_code not in CURRENCIES:
        found.insert(
            0,
            FieldViolation(
                "amount.currency_code", "must be an ISO 4217 currency code, such as USD"
            ),
        )
    return found


def validate_refund(payment_id: str, idempotency_key: str) -> tuple[str, str]:
    """Check a Refund request; returns (payment_id, idempotency_key).

    Raises:
        InvalidArgument: listing every bad field.
    """
    found = RESOURCE_ID.violations(payment_id, "payment_id")
    found += REQUEST_ID.violations(idempotency_key, "idempotency_key")
    if found:
        raise InvalidArgument(found)
    return payment_id, idempotency_key


def charge_outcome(earlier: Payment | Decline, request: ChargeRequest) -> Payment:
    """What a Charge with the key of `earlier` gets: the payment made with it.

    Raises:
        InvalidArgument: on `idempotency_key`: the key was used for another charge.
        FailedPrecondition: the key's charge was declined (type PAYMENT_DECLINED).
    """
    first = earlier.charge if isinstance(earlier, Payment) else earlier.request
    if not first.same_charge(request):
        raise InvalidArgument(
            [FieldViolation("idempotency_key", _KEY_REUSED.format("order, customer or amount"))]
        )
    if isinstance(earlier, Decline):
        raise declined(earlier)
    return earlier


def declined(decline: Decline) -> FailedPrecondition:
    """The problem a declined charge is answered with."""
    return FailedPrecondition(
        "the payment was declined",
        [PreconditionViolation(PAYMENT_DECLINED, decline.request.customer_id, decline.reason)],
    )


def refund_again(earlier: Payment, payment_id: str) -> Payment:
    """What a Refund with the key that refunded `earlier` gets: that payment.

    Raises:
        InvalidArgument: on `idempotency_key`: the key refunded another payment.
    """
    if earlier.payment_id != payment_id:
        raise InvalidArgument([FieldViolation("idempotency_key", _KEY_REUSED.format("payment"))])
    return earlier


def refunded(payment: Payment, idempotency_key: str, now_ns: int) -> Payment:
    """`payment` refunded now with `idempotency_key`.

    Raises:
        FailedPrecondition: it was refunded already, with another key (type
            PAYMENT_STATUS).
    """
    if payment.status is not PaymentStatus.CHARGED:
        raise FailedPrecondition(
            "the payment was refunded already",
            [
                PreconditionViolation(
                    PAYMENT_STATUS, payment.payment_id, "refunded with another idempotency key"
                )
            ],
        )
    return replace(
        payment,
        status=PaymentStatus.REFUNDED,
        refund_key=idempotency_key,
        refund_time_ns=now_ns,
    )


def parse_list_request(order_id: str, page_size: int, page_token: str) -> Page:
    """Validate a ListPayments request: a required order id, and paging (0 means the
    default size, larger sizes are capped).

    Raises:
        InvalidArgument: every bad field at once.
    """
    found = RESOURCE_ID.violations(order_id, "order_id")
    request = paging.parse_page(
        page_size, page_token, kind=_PAGE_KIND, valid_cursor=_is_seq, also=found
    )
    before = None if request.cursor is None else int(request.cursor)
    return Page(order_id=order_id, size=request.size, before=before)


def encode_page_token(cursor: int) -> str:
    """The opaque token that resumes listing with payments older than `cursor`."""
    return paging.page_token(_PAGE_KIND, str(cursor))


def _is_seq(cursor: str) -> bool:
    return cursor.isascii() and cursor.isdigit() and len(cursor) <= 19
