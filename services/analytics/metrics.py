"""The business metrics on /metrics: a Prometheus collector that reads the totals from
the analytics database at each scrape, instead of counters kept in the process. So a
restarted instance goes on from the totals it had, every replica exports the same
numbers, and a redelivered event (counted once in the database) shows once.

Exported: user_registrations_total, payment_success_total, cart_abandonment_total
{step}, orders_not_in_dollars_total{currency} (counters) and order_value_dollars (a
histogram of the US dollar totals of placed orders, buckets 10 to 1000 dollars).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.analytics.domain import Totals

__all__ = ["BusinessMetrics"]


class BusinessMetrics(Collector):
    """Collects `totals()` (services.analytics.store.AnalyticsStore.totals) at each
    scrape. Register it with the instance's registry (mesh.server.Runtime.metrics)."""

    def __init__(self, totals: Callable[[], Totals]) -> None:
        self._totals = totals

    def describe(self) -> Iterable[Metric]:
        # The names, without reading the database when the collector is registered.
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        return _families(self._totals())


def _families(totals: Totals | None) -> list[Metric]:
    registrations = CounterMetricFamily(
        "user_registrations", "Users registered (shop.user.v1.UserRegistered events)"
    )
    payments = CounterMetricFamily(
        "payment_success", "Payments captured (shop.payment.v1.PaymentCaptured events)"
    )
    abandoned = CounterMetricFamily(
        "cart_abandonment",
        "Orders cancelled by their saga (shop.order.v1.OrderCancelled), by the failed step",
        labels=["step"],
    )
    foreign = CounterMetricFamily(
        "orders_not_in_dollars",
        "Orders placed in another currency than USD, left out of order_value_dollars",
        labels=["currency"],
    )
    documentation = "Totals of the orders placed in USD (shop.order.v1.OrderPlaced), in dollars"
    if totals is None:
        values = HistogramMetricFamily("order_value_dollars", documentation)
        return [registrations, payments, abandoned, foreign, values]
    registrations.add_metric([], totals.user_registrations)
    payments.add_metric([], totals.payment_successes)
    _add_labelled(abandoned, totals.cart_abandonments)
    _add_labelled(foreign, totals.orders_not_in_dollars)
    histogram = totals.order_values
    values = HistogramMetricFamily(
        "order_value_dollars",
        documentation,
        buckets=[
            *((str(float(bound)), float(count)) for bound, count in histogram.buckets),
            ("+Inf", float(histogram.count)),
        ],
        sum_value=histogram.sum_dollars,
    )
    return [registrations, payments, abandoned, foreign, values]


def _add_labelled(family: CounterMetricFamily, counts: Mapping[str, int]) -> None:
    for label, count in counts.items():
        family.add_metric([label], count)
