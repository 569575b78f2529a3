"""Shipping's own settings: `services.shipping.settings` in mesh.yaml.

The instance checks them when it starts (`python -m services.shipping
--settings-schema` prints their JSON Schema). `step_seconds` sets the simulated
carrier's pace; `fail` and `delay_ms` are declared failures for demos and tests (the
order saga's): they make it refuse shipments, or answer slowly.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from mesh.config import Matches
from services.common.ids import RESOURCE_ID
from services.shipping.countries import COUNTRIES
from services.shipping.domain import RefusalPolicy

__all__ = ["FailSettings", "ShippingSettings"]

MAX_DELAY_MS = 60_000
MAX_STEP_SECONDS = 86_400.0


def _known_country(code: str) -> str:
    if code not in COUNTRIES:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


OrderId = Annotated[StrictStr, Matches(RESOURCE_ID.pattern, RESOURCE_ID.rule)]
Country = Annotated[
    StrictStr,
    Matches(re.compile(r"[A-Z]{2}"), "must be two upper-case letters"),
    AfterValidator(_known_country),
]
Share = Annotated[StrictFloat, Field(ge=0, le=1)]


class FailSettings(BaseModel):
    """Which shipments the simulated carrier refuses (FAILED_PRECONDITION, type
    SHIPMENT_REFUSED). A refused key stays refused, whatever these become later."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    order_ids: tuple[OrderId, ...] = ()
    """Order ids whose every shipment is refused."""
    countries: tuple[Country, ...] = ()
    """Countries (ISO 3166-1 alpha-2) the carrier does not ship to."""
    share: Share = 0.0
    """Share (0 to 1) of the other shipments refused, picked by the hash of their
    idempotency key: a retry with the key gets the same answer."""

    def policy(self) -> RefusalPolicy:
        return RefusalPolicy(
            order_ids=frozenset(self.order_ids),
            countries=frozenset(self.countries),
            share=self.share,
        )


class ShippingSettings(BaseModel):
    """Settings of the shipping service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    step_seconds: Annotated[StrictFloat, Field(gt=0, le=MAX_STEP_SECONDS)] = 5.0
    """Seconds between a shipment's statuses: CREATED, then PACKED, SHIPPED and
    DELIVERED one step apart. Each shipment keeps the step it was created with."""
    fail: FailSettings = FailSettings()
    """Shipments to refuse; by default none."""
    delay_ms: Annotated[StrictInt, Field(ge=0, le=MAX_DELAY_MS)] = 0
    """Milliseconds every CreateShipment and CancelShipment waits before it is
    processed (the carrier's latency, for deadline demos); 0: none."""
