"""Order's own settings: `services.order.settings` in mesh.yaml (every one has a default).

The instance checks them when it starts (`python -m services.order --settings-schema`
prints their JSON Schema). They pace the saga (services.order.saga): how long a driver
holds a saga, how long each step may take, how often and how long a step whose outcome
is unknown is tried again before the saga is undone, and how often the resumer looks.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

from services.order.saga import SagaPolicy

__all__ = ["OrderSettings", "SagaSettings"]

Seconds = Annotated[StrictFloat, Field(gt=0, le=86_400)]


class SagaSettings(BaseModel):
    """How the saga of each order is driven and resumed."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    lease_seconds: Seconds = 30.0
    """Seconds a driver (a PlaceOrder, or a resumer) holds a saga from one step to the
    next; a saga whose driver died is resumed once this has passed. More than
    step_timeout_seconds, so that a dead driver's last call has ended before another
    driver takes over."""
    step_timeout_seconds: Seconds = 10.0
    """Seconds one call of a step (or of its undoing) may take, whatever the caller's
    deadline."""
    retry_seconds: Seconds = 5.0
    """Seconds before a step whose outcome was unknown is tried again."""
    max_attempts: Annotated[StrictInt, Field(ge=1, le=1000)] = 5
    """Tries of a step whose outcome stays unknown before the saga is undone (and of
    an undoing before it is reported COMPENSATION_FAILED)."""
    give_up_seconds: Seconds = 600.0
    """Seconds after the order was placed past which a step whose outcome is unknown
    is not tried again: the saga is undone."""
    resume_interval_seconds: Seconds = 5.0
    """Seconds between two looks of an instance's resumer for abandoned sagas."""

    @model_validator(mode="after")
    def _lease_outlives_a_step(self) -> Self:
        if self.step_timeout_seconds >= self.lease_seconds:
            raise ValueError("step_timeout_seconds must be less than lease_seconds")
        return self

    def policy(self) -> SagaPolicy:
        return SagaPolicy(
            lease=self.lease_seconds,
            step_timeout=self.step_timeout_seconds,
            retry_delay=self.retry_seconds,
            max_attempts=self.max_attempts,
            give_up_after=self.give_up_seconds,
        )


class OrderSettings(BaseModel):
    """Settings of the order service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    saga: SagaSettings = SagaSettings()
    """The pace of the order saga."""
