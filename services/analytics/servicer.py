"""AnalyticsService over gRPC: the totals of the store, encoded.

Who may call it is the authorisation table's business (mesh.yaml lets admin call
anything and nobody else call analytics): the numbers are the shop's, not a user's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from shop.analytics.v1 import analytics_pb2, analytics_pb2_grpc

from services.analytics.domain import Totals

__all__ = ["AnalyticsServicer", "encode_totals"]

Context = grpc.aio.ServicerContext[Any, Any]


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    """Answers from `totals()` (services.analytics.store.AnalyticsStore.totals)."""

    def __init__(self, totals: Callable[[], Totals]) -> None:
        self._totals = totals

    async def GetBusinessMetrics(
        self, request: analytics_pb2.GetBusinessMetricsRequest, context: Context
    ) -> analytics_pb2.GetBusinessMetricsResponse:
        return analytics_pb2.GetBusinessMetricsResponse(metrics=encode_totals(self._totals()))


def encode_totals(totals: Totals) -> analytics_pb2.BusinessMetrics:
    values = totals.order_values
    return analytics_pb2.BusinessMetrics(
        user_registrations=totals.user_registrations,
        payment_successes=totals.payment_successes,
        cart_abandonments=dict(totals.cart_abandonments),
        order_values=analytics_pb2.OrderValues(
            buckets=[
                analytics_pb2.OrderValueBucket(upper_bound_dollars=bound, count=count)
                for bound, count in values.buckets
            ],
            count=values.count,
            sum_dollars=values.sum_dollars,
        ),
        orders_not_in_dollars=dict(totals.orders_not_in_dollars),
        events_counted=totals.events_counted,
    )
