"""Inventory's own settings: `services.inventory.settings` in mesh.yaml.

The instance checks them when it starts (`python -m services.inventory
--settings-schema` prints their JSON Schema).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from mesh.config import Matches
from services.common.ids import RESOURCE_ID

__all__ = ["InventorySettings"]

ProductId = Annotated[StrictStr, Matches(RESOURCE_ID.pattern, RESOURCE_ID.rule)]


class InventorySettings(BaseModel):
    """Settings of the inventory service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    opening_stock: dict[ProductId, Annotated[StrictInt, Field(ge=0)]] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False}
    )
    """Units on hand, by product id, that a product inventory has never stocked gets
    when inventory learns of it from product's events (or at start-up, if it knew the
    product already), in inventory's own database: once, whichever instance does it."""
