"""The kinds of id a request carries, each with one rule shared by every service.

Every method checks each id of its request against its kind's rule at its boundary,
before any downstream call or database work, so a malformed or oversized id is refused
with INVALID_ARGUMENT naming the field, and never reaches a query, a log line or
another service.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mesh.problems import FieldViolation, InvalidArgument

__all__ = ["CUSTOMER_ID", "REQUEST_ID", "RESOURCE_ID", "USER_ID", "IdKind", "key_share"]


@dataclass(frozen=True)
class IdKind:
    """A kind of id: what it looks like (`pattern`, matched whole) and how that is said
    to a caller (`rule`)."""

    pattern: re.Pattern[str]
    rule: str

    def violations(self, value: str, field: str, *, required: bool = True) -> list[FieldViolation]:
        """What is wrong with `value` as the id in `field`: nothing, "required" (if
        empty and `required`), or the rule."""
        if not value:
            return [FieldViolation(field, "required")] if required else []
        if self.pattern.fullmatch(value) is None:
            return [FieldViolation(field, self.rule)]
        return []

    def check(self, value: str, field: str, *, required: bool = True) -> str:
        """`value`, if it is a valid id for `field`.

        Raises:
            InvalidArgument: on `field`.
        """
        found = self.violations(value, field, required=required)
        if found:
            raise InvalidArgument(found)
        return value


RESOURCE_ID = IdKind(
    re.compile(r"[a-z0-9][a-z0-9-]{0,63}"),
    "must be 1 to 64 lowercase letters, digits or dashes, not starting with a dash",
)
"""Ids of things a service stores: products, orders, reservations (by order id)."""

CUSTOMER_ID = IdKind(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}"),
    "must be 1 to 64 letters, digits or . _ @ + -, starting with a letter or digit",
)
"""Who places an order."""

REQUEST_ID = IdKind(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"),
    "must be 1 to 64 letters, digits or . _ : -, starting with a letter or digit",
)
"""A caller's idempotency key (a UUID fits)."""

USER_ID = IdKind(
    re.compile(r"usr-[0-9a-f]{16}"),
    'must be "usr-" and 16 lowercase hex digits (an id from the auth service)',
)
"""Ids of users, as the auth service makes them: user's streams and the read models of
them are keyed by it."""


def key_share(key: str) -> float:
    """Where `key` falls in [0, 1): the same for the same key, evenly spread over keys
    (a failure knob's share of calls, decided by a request's idempotency key)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
