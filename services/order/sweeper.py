"""Gives back stock held for orders that were never stored.

PlaceOrder records a hold before it reserves stock and drops it once the order is
stored or the stock released (services.order.store). A hold older than `grace` has
outlived its PlaceOrder: its release failed, its reservation ended with an unknown
outcome, or its instance died. The sweeper claims such holds (from then on their orders
can no longer be stored), releases their stock (a release of nothing is fine) and drops
them. Every order instance sweeps; claims and releases are idempotent, so two sweepers
at once do no harm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from services.order.clients import Inventory
from services.order.store import OrderStore

__all__ = ["GRACE", "INTERVAL", "RESERVE_TIMEOUT", "HoldSweeper"]

log = logging.getLogger("services.order")

GRACE = 60.0
"""Seconds a hold may live before it is swept: far beyond the time between a hold and
its order's insert (the reservation's timeout, RESERVE_TIMEOUT, plus two database
writes). A PlaceOrder slower than that is refused and its stock released."""
RESERVE_TIMEOUT = 10.0
"""Seconds PlaceOrder gives inventory to reserve, whatever its caller's deadline."""
INTERVAL = 30.0
"""Seconds between sweeps."""


class HoldSweeper:
    """Args:
    clock: the current time in nanoseconds since the epoch, as PlaceOrder's.
    """

    def __init__(
        self,
        store: OrderStore,
        inventory: Inventory,
        *,
        grace: float = GRACE,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._grace_ns = int(grace * 1e9)
        self._clock = clock

    async def sweep(self) -> list[str]:
        """One sweep; returns the order ids whose stock it released."""
        claimed = await asyncio.to_thread(self._store.claim_holds, self._clock() - self._grace_ns)
        released = []
        for order_id in claimed:
            try:
                await self._inventory.release(order_id)
            except Exception as error:  # the next sweep tries again
                log.warning("could not release the stock held for %s: %s", order_id, error)
                continue
            await asyncio.to_thread(self._store.drop_hold, order_id)
            released.append(order_id)
        if released:
            log.info("released stock held for unstored orders", extra={"orders": released})
        return released

    async def run(self, interval: float = INTERVAL) -> None:
        """Sweep every `interval` seconds until cancelled."""
        while True:
            try:
                await self.sweep()
            except Exception:  # the database, say: the next sweep tries again
                log.exception("sweeping stock holds failed")
            await asyncio.sleep(interval)
