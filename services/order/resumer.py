"""Finishes the sagas their drivers left behind.

A PENDING order whose lease has expired (services.order.store) was left by its driver:
its PlaceOrder stopped at a step of unknown outcome (it set the lease to expire when the
step is due to be tried again), or its instance died mid-saga. Every order instance runs
a resumer, which claims such sagas in one transaction (so two resumers, or a resumer
and a PlaceOrder, never drive one saga at once) and drives each on with
services.order.saga, forward or backward, from what its steps say.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from services.order.saga import OrderSaga
from services.order.store import OrderStore

__all__ = ["BATCH", "INTERVAL", "SagaResumer"]

log = logging.getLogger("services.order")

INTERVAL = 5.0
"""Seconds between two looks for abandoned sagas."""
BATCH = 20
"""Most sagas claimed in one look (the next look takes the rest)."""


class SagaResumer:
    """Args:
    owner: the name this resumer holds leases under (a fresh one by default).
    clock: the current time in nanoseconds since the epoch, as the saga's.
    """

    def __init__(
        self,
        store: OrderStore,
        saga: OrderSaga,
        *,
        owner: str | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._saga = saga
        self.owner = owner or f"resumer-{secrets.token_hex(6)}"
        self._clock = clock

    async def resume(self) -> list[str]:
        """One look: claim the abandoned sagas and drive each as far as it goes now.
        Returns the ids of the orders claimed."""
        now = self._clock()
        claimed = await asyncio.to_thread(
            self._store.claim_expired,
            now,
            owner=self.owner,
            lease_until_ns=self._saga.lease_until(now),
            limit=BATCH,
        )
        for order_id in claimed:
            try:
                outcome = await self._saga.drive(order_id, self.owner)
            except Exception:  # the database, say: the lease expires, and we look again
                log.exception("resuming the saga of %s failed", order_id)
                continue
            log.info(
                "saga resumed",
                extra={"order_id": order_id, "status": outcome.order.status.name,
                       "lost": outcome.lost},
            )  # fmt: skip
        return claimed

    async def run(self, interval: float = INTERVAL) -> None:
        """Look every `interval` seconds until cancelled."""
        while True:
            try:
                await self.resume()
            except Exception:  # the database, say: the next look tries again
                log.exception("looking for abandoned sagas failed")
            await asyncio.sleep(interval)
