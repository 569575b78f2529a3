"""Money, shaped like google.type.Money, exact: amounts are whole nanos (Python ints),
never floats, and split into units and nanos only at the edges.

One type for every service (the catalogue's prices, an order's totals, payments to
come), with its proto conversions: a service's domain code uses Money, its servicer
converts at the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.type import money_pb2

from mesh.problems import FieldViolation

__all__ = ["MAX_UNITS", "MONEY_TEXT", "NANOS_PER_UNIT", "Money"]

NANOS_PER_UNIT = 1_000_000_000
MAX_UNITS = 2**63 - 1
"""google.type.Money.units is an int64."""

_CURRENCY = re.compile(r"[A-Z]{3}")
MONEY_TEXT = re.compile(r"(\d{1,15})(?:\.(\d{1,9}))? ([A-Z]{3})")
"""An amount as settings write it: "<amount> <ISO 4217 code>", e.g. "24.50 USD"."""


@dataclass(frozen=True)
class Money:
    """An amount of one currency: `units` and `nanos` of the same sign."""

    currency_code: str
    units: int
    nanos: int

    @classmethod
    def parse(cls, text: str) -> Money:
        """The amount `text` writes as MONEY_TEXT says ("24.50 USD"); else ValueError."""
        match = MONEY_TEXT.fullmatch(text)
        if match is None:
            raise ValueError(f"an amount looks like '24.50 USD', not {text!r:.40}")
        units, fraction, currency = match.groups()
        return cls(
            currency_code=currency, units=int(units), nanos=int((fraction or "").ljust(9, "0"))
        )

    def to_nanos(self) -> int:
        """The amount as a whole number of nanos (units and nanos share a sign)."""
        return self.units * NANOS_PER_UNIT + self.nanos

    @classmethod
    def from_nanos(cls, currency_code: str, amount: int) -> Money:
        """The amount of `amount` nanos, with units and nanos of the same sign."""
        units, nanos = divmod(abs(amount), NANOS_PER_UNIT)
        sign = -1 if amount < 0 else 1
        return cls(currency_code=currency_code, units=sign * units, nanos=sign * nanos)

    def price_violations(self, field: str) -> list[FieldViolation]:
        """What is wrong with this amount as a price: code, nanos range and sign,
        positivity."""
        found = []
        if not _CURRENCY.fullmatch(self.currency_code):
            found.append(
                FieldViolation(f"{field}.currency_code", "must be three upper-case letters")
            )
        if not -NANOS_PER_UNIT < self.nanos < NANOS_PER_UNIT:
            found.append(
                FieldViolation(f"{field}.nanos", "must be between -999999999 and 999999999")
            )
        elif (self.units > 0 and self.nanos < 0) or (self.units < 0 and self.nanos > 0):
            found.append(FieldViolation(f"{field}.nanos", "must have the same sign as units"))
        elif self.to_nanos() <= 0:
            found.append(FieldViolation(field, "must be positive"))
        return found

    @classmethod
    def from_proto(cls, money: money_pb2.Money) -> Money:
        return cls(currency_code=money.currency_code, units=money.units, nanos=money.nanos)

    def to_proto(self) -> money_pb2.Money:
        return money_pb2.Money(currency_code=self.currency_code, units=self.units, nanos=self.nanos)
