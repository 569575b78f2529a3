"""Product's own settings: `services.product.settings` in mesh.yaml.

The instance checks them when it starts (`python -m services.product --settings-schema`
prints their JSON Schema), so a bad demo product stops it with the setting's dotted key
instead of failing in the catalogue.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from mesh.config import Matches
from services.common.ids import RESOURCE_ID
from services.common.money import MONEY_TEXT, Money
from services.product.domain import MAX_NAME

__all__ = ["DemoProduct", "ProductSettings"]


class DemoProduct(BaseModel):
    """A product the service creates in its catalogue at start-up when missing."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    product_id: Annotated[StrictStr, Matches(RESOURCE_ID.pattern, RESOURCE_ID.rule)]
    """Its id, as the API takes it."""
    name: StrictStr = Field(min_length=1, max_length=MAX_NAME)
    """What the catalogue calls it."""
    price: Annotated[StrictStr, Matches(MONEY_TEXT, "must look like '24.50 USD'")]
    """"<amount> <ISO 4217 code>", e.g. "24.50 USD"."""

    @property
    def price_parts(self) -> tuple[str, int, int]:
        """(currency code, whole units, nanos) of the price."""
        price = Money.parse(self.price)
        return price.currency_code, price.units, price.nanos


class ProductSettings(BaseModel):
    """Settings of the product service."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    demo_products: tuple[DemoProduct, ...] = ()
    """Created in product's own database at start-up, each when missing (a product a
    user changed is left as it is)."""
