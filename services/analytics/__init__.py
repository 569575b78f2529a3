"""The analytics service: counts the shop's business (registrations, order values,
payments, abandoned carts) from the events of the user, order and payment services,
each event once, keeps the counts in its own database and exports them as Prometheus
metrics on its /metrics and through AnalyticsService.GetBusinessMetrics.

Run an instance with `python -m services.analytics`; several instances share one
database and one consumer, so each reports the same totals.
"""
