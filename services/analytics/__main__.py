"""Entrypoint: `python -m services.analytics --config mesh.yaml`."""

from __future__ import annotations

import asyncio

from shop.analytics.v1 import analytics_pb2, analytics_pb2_grpc

from mesh.events import Event
from mesh.server import Runtime, run_service
from services.analytics.domain import CONSUMER, TOPICS
from services.analytics.metrics import BusinessMetrics
from services.analytics.servicer import AnalyticsServicer
from services.analytics.store import AnalyticsStore
from services.common.messaging import consume

__all__ = ["main", "setup"]


async def setup(rt: Runtime) -> None:
    """Open the analytics database (shared by every instance), count the events of the
    user, order and payment topics into it as consumer "analytics", export the counts
    on /metrics and serve AnalyticsService."""
    store = AnalyticsStore(rt.data_dir / "analytics.db")
    rt.on_close(store.close)
    rt.metrics.register(BusinessMetrics(store.totals))

    async def count(event: Event) -> None:
        await asyncio.to_thread(store.count, event)

    for topic in TOPICS:
        consume(rt, topic, CONSUMER, count)  # registered after the store: stops before it
    rt.add_service(
        analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
        AnalyticsServicer(store.totals),
        analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server,
    )


def main() -> int:
    return run_service("analytics", setup)


if __name__ == "__main__":
    raise SystemExit(main())
