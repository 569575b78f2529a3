"""The analytics service without processes: what each event counts for, counts kept
once per event in a tmp_path database (across reopening and a second store on the
file), and the collector and the RPC reporting the same totals."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from google.type import money_pb2
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from shop.analytics.v1 import analytics_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from shop.user.v1 import events_pb2 as user_events

from mesh.events import Event
from services.analytics.domain import Count, OrderValue, bucket_of, tally
from services.analytics.metrics import BusinessMetrics
from services.analytics.servicer import AnalyticsServicer
from services.analytics.store import AnalyticsStore


def event(message: Message, stream: str = "s-1", *, data: bytes | None = None) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        stream=stream,
        type=message.DESCRIPTOR.full_name,
        data=message.SerializeToString() if data is None else data,
        occurred_at=time.time(),
        version=1,
    )


def placed(units: int, nanos: int = 0, currency: str = "USD") -> Event:
    total = money_pb2.Money(currency_code=currency, units=units, nanos=nanos)
    return event(order_events.OrderPlaced(order_id="ord-1", total=total))


def cancelled(step: str) -> Event:
    return event(order_events.OrderCancelled(order_id="ord-1", failed_step=step))


REGISTERED = user_events.UserRegistered(user_id="usr-1", username="ada")
CAPTURED = payment_events.PaymentCaptured(payment_id="pay-1")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "analytics.db"


@pytest.fixture
def store(path: Path) -> Iterator[AnalyticsStore]:
    store = AnalyticsStore(path)
    yield store
    store.close()


def test_each_event_type_counts_for_its_metric() -> None:
    assert tally(event(REGISTERED)) == [Count("user_registrations")]
    assert tally(event(CAPTURED)) == [Count("payment_success")]
    assert tally(cancelled("charge_payment")) == [Count("cart_abandonment", "charge_payment")]
    assert tally(placed(24, 500_000_000)) == [OrderValue(24_500_000_000)]
    assert tally(placed(20, currency="EUR")) == [Count("orders_not_in_dollars", "EUR")]
    assert tally(event(order_events.OrderConfirmed(order_id="ord-1"))) == []
    assert tally(event(payment_events.PaymentDeclined(order_id="ord-1"))) == []
    assert tally(event(user_events.EmailChanged(email="a@b.c"))) == []


def test_labels_from_other_services_stay_bounded() -> None:
    assert tally(cancelled("x" * 300)) == [Count("cart_abandonment", "other")]
    assert tally(cancelled("")) == [Count("cart_abandonment", "other")]
    assert tally(placed(5, currency="euro\n")) == [Count("orders_not_in_dollars", "other")]


def test_a_payload_that_does_not_parse_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="OrderPlaced"):
        tally(event(order_events.OrderPlaced(), data=b"\xff\xff\xff"))


def test_bounds_are_inclusive() -> None:
    assert bucket_of(10 * 10**9) == 10
    assert bucket_of(10 * 10**9 + 1) == 25
    assert bucket_of(1000 * 10**9) == 1000
    assert bucket_of(1000 * 10**9 + 1) is None


def test_a_redelivered_event_counts_once(store: AnalyticsStore) -> None:
    first = event(REGISTERED)
    assert store.count(first)
    assert not store.count(first)
    assert store.count(event(REGISTERED))
    totals = store.totals()
    assert (totals.user_registrations, totals.events_counted) == (2, 2)


def test_the_histogram_is_cumulative_with_its_sum(store: AnalyticsStore) -> None:
    for units, nanos in ((5, 0), (10, 0), (24, 500_000_000), (2000, 0)):
        store.count(placed(units, nanos))
    store.count(placed(30, currency="EUR"))
    values = store.totals().order_values
    assert values.buckets == (
        (10, 2),
        (25, 3),
        (50, 3),
        (100, 3),
        (250, 3),
        (500, 3),
        (1000, 3),
    )
    assert values.count == 4
    assert values.sum_dollars == pytest.approx(2039.5)
    assert store.totals().orders_not_in_dollars == {"EUR": 1}


def test_counts_survive_reopening_and_are_shared_by_every_store_on_the_file(
    path: Path, store: AnalyticsStore
) -> None:
    shared = event(CAPTURED)
    store.count(shared)
    store.count(cancelled("reserve_stock"))
    other = AnalyticsStore(path)  # a second replica on the same database
    try:
        assert not other.count(shared)  # delivered to the other replica too: once
        assert other.totals() == store.totals()
    finally:
        other.close()
    store.close()
    reopened = AnalyticsStore(path)  # a restarted instance
    try:
        totals = reopened.totals()
        assert (totals.payment_successes, dict(totals.cart_abandonments)) == (
            1,
            {"reserve_stock": 1},
        )
    finally:
        reopened.close()


def test_an_event_that_does_not_parse_is_recorded_and_counts_for_nothing(
    store: AnalyticsStore,
) -> None:
    broken = event(order_events.OrderPlaced(), data=b"\xff\xff\xff")
    assert store.count(broken)
    assert not store.count(broken)
    totals = store.totals()
    assert (totals.events_counted, totals.order_values.count) == (1, 0)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_collector_exports_what_the_database_holds(store: AnalyticsStore) -> None:
    registry = CollectorRegistry()
    registry.register(BusinessMetrics(store.totals))
    empty = scrape(registry)
    assert empty[("user_registrations_total", frozenset())] == 0
    assert empty[("order_value_dollars_count", frozenset())] == 0
    for item in (event(REGISTERED), event(CAPTURED), cancelled("create_shipment"), placed(24)):
        store.count(item)
    store.count(placed(12, currency="GBP"))
    samples = scrape(registry)
    assert samples[("user_registrations_total", frozenset())] == 1
    assert samples[("payment_success_total", frozenset())] == 1
    assert samples[("cart_abandonment_total", frozenset({("step", "create_shipment")}))] == 1
    assert samples[("orders_not_in_dollars_total", frozenset({("currency", "GBP")}))] == 1
    assert samples[("order_value_dollars_bucket", frozenset({("le", "10.0")}))] == 0
    assert samples[("order_value_dollars_bucket", frozenset({("le", "25.0")}))] == 1
    assert samples[("order_value_dollars_bucket", frozenset({("le", "+Inf")}))] == 1
    assert samples[("order_value_dollars_sum", frozenset())] == 24


async def test_the_rpc_reports_the_same_totals(store: AnalyticsStore, context: Any) -> None:
    store.count(placed(24, 500_000_000))
    store.count(cancelled("charge_payment"))
    servicer = AnalyticsServicer(store.totals)
    answer = await servicer.GetBusinessMetrics(analytics_pb2.GetBusinessMetricsRequest(), context)
    metrics = answer.metrics
    assert dict(metrics.cart_abandonments) == {"charge_payment": 1}
    assert (metrics.order_values.count, metrics.order_values.sum_dollars) == (1, 24.5)
    assert [(b.upper_bound_dollars, b.count) for b in metrics.order_values.buckets][:2] == [
        (10.0, 0),
        (25.0, 1),
    ]
    assert metrics.events_counted == 2
