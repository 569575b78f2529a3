"""Payment's own settings: `services.payment.settings` in mesh.yaml.

The instance checks them when it starts (`python -m services.payment --settings-schema`
prints their JSON Schema). Both knobs are declared failures for demos and tests (the
order saga's): they make the simulated processor decline, or answer slowly.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from mesh.config import Matches
from services.common.ids import CUSTOMER_ID
from services.common.money import MONEY_TEXT, Money
from services.payment.domain import DeclinePolicy

__all__ = ["DeclineSettings", "PaymentSettings"]

CustomerId = Annotated[StrictStr, Matches(CUSTOMER_ID.pattern, CUSTOMER_ID.rule)]

MAX_DELAY_MS = 60_000


class DeclineSettings(BaseModel):
    """Which charges the simulated processor declines (FAILED_PRECONDITION, type
    PAYMENT_DECLINED). A declined key stays declined, whatever these become later."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    customers: tuple[CustomerId, ...] = ()
    """Customer ids whose every charge is declined."""
    share: Annotated[StrictFloat, Field(ge=0, le=1)] = 0.0
    """Share (0 to 1) of the other charges declined, picked by the hash of their
    idempotency key: a retry with the key gets the same answer."""
    over: Annotated[StrictStr, Matches(MONEY_TEXT, "must look like '500.00 USD'")] | None = None
    """A card limit, "<amount> <ISO 4217 code>": every charge of more than this in that
    currency is declined (`meshctl demo` orders past it)."""

    def policy(self) -> DeclinePolicy:
        limit = Money.parse(self.over) if self.over is not None else None
        return DeclinePolicy(customers=frozenset(self.customers), share=self.share, over=limit)


class PaymentSettings(BaseModel):
    """Settings of the payment service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    decline: DeclineSettings = DeclineSettings()
    """Charges to decline; by default none."""
    delay_ms: Annotated[StrictInt, Field(ge=0, le=MAX_DELAY_MS)] = 0
    """Milliseconds every Charge and Refund waits before it is processed (the
    processor's latency, for deadline demos); 0: none."""
