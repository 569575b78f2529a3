"""What inventory learns from product's events: which products exist.

Inventory consumes topic "product" as consumer "inventory". A ProductCreated makes the
product known to the store (and gives it its opening stock from inventory's settings);
learning is an upsert, so a redelivered event changes nothing. Any other event type of
the topic is acknowledged and ignored (product may add events that inventory does not
need), and so is one that does not parse, which no redelivery would mend.

An instance waits, before it serves, until it has caught up with the topic (`catch_up`):
otherwise an instance that starts behind a backlog would refuse, as unknown, products
that the broker has long told it of. The wait is bounded, so an instance whose broker
is away still starts (and refuses stock for the products it has not learnt of).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from google.protobuf.message import DecodeError
from shop.product.v1 import events_pb2

from mesh.events import BrokerUnavailable, Event, Handler
from mesh.server import Runtime
from services.common.ids import RESOURCE_ID
from services.inventory.store import InventoryStore

__all__ = ["CONSUMER", "OPENING_REASON", "TOPIC", "catch_up", "created_product_id", "learner"]

log = logging.getLogger("services.inventory")

TOPIC = "product"
CONSUMER = "inventory"
OPENING_REASON = "opening stock (inventory's settings in mesh.yaml)"
_CREATED = events_pb2.ProductCreated.DESCRIPTOR.full_name
_POLL = 0.05  # seconds between two looks at the backlog while catching up


def created_product_id(event: Event) -> str | None:
    """The id of the product `event` creates, if it is a readable ProductCreated with a
    well-formed id; else None (logged if it claims to be one)."""
    if event.type != _CREATED:
        return None
    try:
        product_id = events_pb2.ProductCreated.FromString(event.data).product_id
    except DecodeError as error:
        log.warning("ignored event %s of %s: unreadable: %s", event.id, event.stream, error)
        return None
    if RESOURCE_ID.violations(product_id, "product_id"):
        log.warning("ignored event %s of %s: malformed product id", event.id, event.stream)
        return None
    return product_id


def learner(
    store: InventoryStore, opening_stock: Mapping[str, int], on_changed: Callable[[], None]
) -> Handler:
    """The handler of topic "product": learns each product created, giving it its
    `opening_stock` if it has one, then calls `on_changed` (the relay's `notify`)."""

    async def learn(event: Event) -> None:
        product_id = created_product_id(event)
        if product_id is None:
            return
        opening = opening_stock.get(product_id)
        if await asyncio.to_thread(store.learn_product, product_id, opening, OPENING_REASON):
            log.info("learnt of product %s", product_id)
        on_changed()

    return learn


async def catch_up(rt: Runtime, timeout: float) -> bool:
    """Wait until consumer "inventory" has applied every event the broker stores for
    topic "product", for about `timeout` s at most (a connection attempt under way may
    outlast it); True if it has."""
    started = time.monotonic()
    deadline = started + timeout
    behind: int | str = "unknown"
    while True:
        try:
            backlog = await (await rt.event_bus()).backlog(TOPIC, CONSUMER)
        except BrokerUnavailable as error:
            behind = f"unknown (broker unavailable: {error})"
        else:
            if backlog.events == 0:
                log.info("caught up with topic %s in %.2fs", TOPIC, time.monotonic() - started)
                return True
            behind = backlog.events
        if time.monotonic() >= deadline:
            log.warning(
                "not caught up with topic %s after %.1fs (events behind: %s): serving;"
                " stock of products not learnt yet is NOT_FOUND",
                TOPIC,
                timeout,
                behind,
            )
            return False
        await asyncio.sleep(_POLL)
