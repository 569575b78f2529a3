"""Hand-made shop part figures: two subjects' windows, received events and written
ones with round times, so each test can state its answer."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.results import SubjectResult
from bench.shop import LABELS
from bench.shop_results import (
    CONSUMER,
    Interval,
    Received,
    ShopSubject,
    Written,
    idle_orders,
    relay_alone,
    relay_phase,
    shop_summary,
)
from bench.summary import ShopJson, ShopSettingsJson
from tests.unit.bench.factories import make_window

T0 = 1_000.0  # wall-clock seconds where the made-up runs begin


def received(
    occurred: float,
    stored: float,
    handled: float,
    *,
    topic: str = "order",
    kind: str = "shop.order.v1.OrderPlaced",
    event_id: str = "",
) -> Received:
    """An event that occurred, was stored and reached the handler at T0 + those times."""
    return Received(
        topic=topic,
        event_id=event_id or f"e-{occurred}-{topic}",
        type=kind,
        occurred_at=T0 + occurred,
        received_at=T0 + handled,
        stored_at=math.nan if math.isnan(stored) else T0 + stored,
    )


def written(event_id: str, *times: float) -> Written:
    """An event of the relay alone: built, committed, publish called, acknowledged."""
    occurred, committed, called, acknowledged = (T0 + t for t in times)
    return Written(event_id, occurred, committed, called, acknowledged)


def make_subjects(
    get_calls: Sequence[int] = (2000, 1800), order_calls: Sequence[int] = (100, 90)
) -> tuple[ShopSubject, ShopSubject]:
    """GetProduct and PlaceOrder, one-second rounds. GetProduct's product process used
    0.9 s a second; each PlaceOrder second cost order 0.4 s, payment 0.2 s, the
    broker 0.1 s, the consumer 0.05 s and the load 0.02 s."""
    get = SubjectResult(1, "GetProduct", "product", [])
    for calls in get_calls:
        get.windows.append(
            make_window(
                calls=calls,
                latencies=[0.008] * 9 + [0.02],
                server_cpu=0.9,
                client_cpu=[0.3, 0.3],
                core_cpu={0: 0.7, 1: 0.98},
                tracked_cpu={label: 0.0 for label in LABELS if label != "product"},
            )
        )
    place = SubjectResult(2, "PlaceOrder", "order", [])
    for calls in order_calls:
        tracked = {label: 0.0 for label in LABELS if label != "order"}
        tracked |= {"payment": 0.2, "nats": 0.1, CONSUMER: 0.05}
        place.windows.append(
            make_window(
                calls=calls,
                latencies=[0.16] * 9 + [0.4],
                server_cpu=0.4,
                client_cpu=[0.01, 0.01],
                core_cpu={0: 0.2, 1: 0.97},
                tracked_cpu=tracked,
            )
        )
    return (
        ShopSubject(get, "/shop.product.v1.ProductService/GetProduct", "product", 16),
        ShopSubject(place, "/shop.order.v1.OrderService/PlaceOrder", "order", 16),
    )


def make_settings() -> ShopSettingsJson:
    return {
        "rounds": 2,
        "window_s": 1.0,
        "warmup_s": 0.5,
        "workers": 2,
        "concurrency_per_worker": 8,
        "in_flight": 16,
        "in_flight_note": "why",
        "order_each_round": ["GetProduct", "PlaceOrder"],
        "placement": "servers on core 1",
        "idle_orders": 3,
        "relay_rate_per_s": 50.0,
        "relay_events": 2,
    }


def make_shop() -> ShopJson:
    """A shop part with every phase: under load (2 events), idle (4 of 4), and the
    relay alone (2 of 2)."""
    samples = [
        received(0.1, 0.13, 0.14),
        received(0.2, 0.24, 0.25, kind="shop.order.v1.OrderConfirmed"),
        *(received(10 + n, 10 + n + 0.002, 10 + n + 0.003) for n in range(4)),
        received(20.0, 20.002, 20.0025, topic="bench-relay", event_id="p1"),
        received(20.02, 20.022, 20.0225, topic="bench-relay", event_id="p2"),
    ]
    writes = [
        written("p1", 20.0, 20.0003, 20.0008, 20.0018),
        written("p2", 20.02, 20.0203, 20.0208, 20.0218),
    ]
    baseline, orders = make_subjects()
    phases = [
        relay_phase("under load", "load", samples, [Interval(T0, T0 + 1)], topic="order"),
        relay_phase(
            "idle", "idle", samples, [Interval(T0 + 10, T0 + 14)], topic="order", expected=4
        ),
        relay_alone("alone", writes, samples, topic="bench-relay"),
    ]
    return shop_summary(
        baseline,
        orders,
        labels=LABELS,
        settings=make_settings(),
        cores=(0, 1),
        idle=idle_orders([0.01, 0.012, 0.03], []),
        phases=phases,
    )
