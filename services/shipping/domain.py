"""Shipping rules: request validation, the refusal policy, what a repeated key means,
and where a shipment stands at a given time. No I/O, no gRPC.

A shipment's status is computed, never advanced by a task: it is CREATED at its
creation and moves to PACKED, SHIPPED and DELIVERED one `step` apart, counted from its
creation, unless it was cancelled (then CANCELLED since its cancellation). Its step is
fixed when it is created and stored with it, so a later change of the settings changes
only the shipments created after it, and a status never moves backwards. The only
change ever written is a cancellation.

A creation's outcome is decided once per idempotency key and kept: a Shipment, or a
Refusal (nothing shipped). A new key gets what the RefusalPolicy says at that moment.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from mesh.problems import FailedPrecondition, FieldViolation, InvalidArgument, PreconditionViolation
from services.common.ids import REQUEST_ID, RESOURCE_ID, key_share
from services.common.items import item_violations
from services.shipping.countries import COUNTRIES

__all__ = [
    "CANCELLABLE",
    "FINAL_STATUSES",
    "MAX_CITY",
    "MAX_NAME",
    "MAX_STREET",
    "SHIPMENT",
    "SHIPMENT_REFUSED",
    "SHIPMENT_STATUS",
    "Address",
    "Progress",
    "Refusal",
    "RefusalPolicy",
    "Shipment",
    "ShipmentItem",
    "ShipmentRequest",
    "ShipmentStatus",
    "address_violations",
    "cancelled",
    "creation_outcome",
    "key_share",
    "new_shipment_id",
    "refused",
    "require_shipment_id",
    "validate_shipment",
]

SHIPMENT = "shop.shipping.v1.Shipment"
"""Resource type named in NOT_FOUND details."""

SHIPMENT_REFUSED = "SHIPMENT_REFUSED"
"""PreconditionViolation type of a shipment the carrier would not take."""

SHIPMENT_STATUS = "SHIPMENT_STATUS"
"""PreconditionViolation type of a shipment whose status does not allow the request."""

MAX_NAME = 100
MAX_STREET = 200
MAX_CITY = 100
_POSTAL_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,15}")
_POSTAL_RULE = "must be up to 16 letters, digits, spaces or dashes, starting with a letter or digit"
_COUNTRY_RULE = "must be an ISO 3166-1 alpha-2 country code in upper case, such as DE"
# Control characters, and the line and paragraph separators: an address line is one line.
_NOT_IN_A_LINE = frozenset({"Cc", "Zl", "Zp"})


class ShipmentStatus(enum.Enum):
    """Where a shipment stands."""

    CREATED = 1
    PACKED = 2
    SHIPPED = 3
    DELIVERED = 4
    CANCELLED = 5


_SCHEDULE = (
    ShipmentStatus.CREATED,
    ShipmentStatus.PACKED,
    ShipmentStatus.SHIPPED,
    ShipmentStatus.DELIVERED,
)

FINAL_STATUSES = frozenset({ShipmentStatus.DELIVERED, ShipmentStatus.CANCELLED})
"""Statuses a shipment never leaves, where a TrackShipment stream ends."""

CANCELLABLE = frozenset({ShipmentStatus.CREATED, ShipmentStatus.PACKED})
"""Statuses a shipment may be cancelled in: it has not left yet."""


@dataclass(frozen=True)
class Address:
    """Where a shipment goes."""

    name: str
    street: str
    city: str
    postal_code: str
    country: str


@dataclass(frozen=True)
class ShipmentItem:
    """A quantity of one product."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class ShipmentRequest:
    """A validated CreateShipment request."""

    order_id: str
    address: Address
    items: tuple[ShipmentItem, ...]
    idempotency_key: str

    @property
    def fingerprint(self) -> str:
        """What makes two requests with one key the same shipment: the same order,
        address and items (in any order)."""
        canonical = json.dumps(
            [
                self.order_id,
                [
                    self.address.name,
                    self.address.street,
                    self.address.city,
                    self.address.postal_code,
                    self.address.country,
                ],
                sorted([item.product_id, item.quantity] for item in self.items),
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Progress:
    """Where a shipment stands at one moment, and since when."""

    status: ShipmentStatus
    since_ns: int


@dataclass(frozen=True)
class Shipment:
    """Items of an order on their way. `step_ns` is its schedule: the time between two
    statuses, fixed at its creation."""

    shipment_id: str
    order_id: str
    address: Address
    items: tuple[ShipmentItem, ...]
    create_time_ns: int
    step_ns: int
    idempotency_key: str
    cancel_time_ns: int | None = None

    @property
    def request(self) -> ShipmentRequest:
        """The CreateShipment request that made this shipment."""
        return ShipmentRequest(self.order_id, self.address, self.items, self.idempotency_key)

    def progress(self, now_ns: int) -> Progress:
        """Where the shipment stands at `now_ns`."""
        if self.cancel_time_ns is not None:
            return Progress(ShipmentStatus.CANCELLED, self.cancel_time_ns)
        steps = min(max(now_ns - self.create_time_ns, 0) // self.step_ns, len(_SCHEDULE) - 1)
        return Progress(_SCHEDULE[steps], self.create_time_ns + steps * self.step_ns)

    def next_change_ns(self, now_ns: int) -> int | None:
        """When its status next changes by itself, None once it is final."""
        progress = self.progress(now_ns)
        if progress.status in FINAL_STATUSES:
            return None
        return progress.since_ns + self.step_ns


@dataclass(frozen=True)
class Refusal:
    """A shipment the carrier would not take, kept by its key: nothing was shipped, and
    a retry with the key is refused again."""

    idempotency_key: str
    fingerprint: str
    subject: str
    reason: str
    time_ns: int


@dataclass(frozen=True)
class RefusalPolicy:
    """Which shipments the simulated carrier refuses: those of `order_ids`, those to
    `countries`, and `share` (0 to 1) of all others, picked by the hash of the
    idempotency key, so that the answer for one key is always the same."""

    order_ids: Collection[str] = ()
    countries: Collection[str] = ()
    share: float = 0.0

    def refusal(self, request: ShipmentRequest) -> tuple[str, str] | None:
        """(subject, reason) of the refusal of `request`, None if it is accepted."""
        if request.order_id in self.order_ids:
            return request.order_id, "the carrier refuses this order"
        if request.address.country in self.countries:
            country = request.address.country
            return country, f"the carrier does not ship to {country}"
        if key_share(request.idempotency_key) < self.share:
            return request.order_id, "the carrier refused the shipment"
        return None


def new_shipment_id() -> str:
    """A fresh shipment id: "shp-" and 16 hex digits."""
    return f"shp-{secrets.token_hex(8)}"


def require_shipment_id(shipment_id: str) -> str:
    """The id to look up, if well formed (an unknown one is then simply not found).

    Raises:
        InvalidArgument: on `shipment_id`.
    """
    return RESOURCE_ID.check(shipment_id, "shipment_id")


def validate_shipment(
    order_id: str,
    address: Address | None,
    items: Sequence[ShipmentItem],
    idempotency_key: str,
) -> ShipmentRequest:
    """Check a CreateShipment request: `address` None means the request has none; items
    as services.common.items allows them (1 to 100, each product once).

    Raises:
        InvalidArgument: listing every bad field (`order_id`, `address.country`,
            `items[1].quantity`, `idempotency_key`, ...).
    """
    found = RESOURCE_ID.violations(order_id, "order_id")
    if address is None:
        found.append(FieldViolation("address", "required"))
    else:
        found += address_violations(address, "address")
    found += item_violations(items)
    found += REQUEST_ID.violations(idempotency_key, "idempotency_key")
    if found or address is None:
        raise InvalidArgument(found)
    return ShipmentRequest(order_id, address, tuple(items), idempotency_key)


def address_violations(address: Address, field: str) -> list[FieldViolation]:
    """What is wrong with `address`, each line named `<field>.<line>`."""
    found = _line_violations(address.name, f"{field}.name", MAX_NAME)
    found += _line_violations(address.street, f"{field}.street", MAX_STREET)
    found += _line_violations(address.city, f"{field}.city", MAX_CITY)
    if address.postal_code and _POSTAL_CODE.fullmatch(address.postal_code) is None:
        found.append(FieldViolation(f"{field}.postal_code", _POSTAL_RULE))
    if not address.country:
        found.append(FieldViolation(f"{field}.country", "required"))
    elif address.country not in COUNTRIES:
        found.append(FieldViolation(f"{field}.country", _COUNTRY_RULE))
    return found


def _line_violations(value: str, field: str, limit: int) -> list[FieldViolation]:
    if not value.strip():
        return [FieldViolation(field, "required")]
    if len(value) > limit:
        return [FieldViolation(field, f"must be at most {limit} characters")]
    if any(unicodedata.category(char) in _NOT_IN_A_LINE for char in value):
        return [FieldViolation(field, "must be one line without control characters")]
    return []


def creation_outcome(earlier: Shipment | Refusal, request: ShipmentRequest) -> Shipment:
    """What a CreateShipment with the key of `earlier` gets: the shipment made with it.

    Raises:
        InvalidArgument: on `idempotency_key`: the key was used for another shipment.
        FailedPrecondition: the key's shipment was refused (type SHIPMENT_REFUSED).
    """
    fingerprint = (
        earlier.request.fingerprint if isinstance(earlier, Shipment) else earlier.fingerprint
    )
    if fingerprint != request.fingerprint:
        raise InvalidArgument(
            [FieldViolation("idempotency_key", "already used for another order, address or items")]
        )
    if isinstance(earlier, Refusal):
        raise refused(earlier)
    return earlier


def refused(refusal: Refusal) -> FailedPrecondition:
    """The problem a refused shipment is answered with."""
    return FailedPrecondition(
        "the carrier refused the shipment",
        [PreconditionViolation(SHIPMENT_REFUSED, refusal.subject, refusal.reason)],
    )


def cancelled(shipment: Shipment, now_ns: int) -> Shipment:
    """`shipment` cancelled at `now_ns`; a cancelled one is returned unchanged.

    Raises:
        FailedPrecondition: it has left already (SHIPPED or DELIVERED; type
            SHIPMENT_STATUS).
    """
    status = shipment.progress(now_ns).status
    if status is ShipmentStatus.CANCELLED:
        return shipment
    if status not in CANCELLABLE:
        raise FailedPrecondition(
            f"a {status.name} shipment can no longer be cancelled",
            [PreconditionViolation(SHIPMENT_STATUS, shipment.shipment_id, f"is {status.name}")],
        )
    return replace(shipment, cancel_time_ns=now_ns)
