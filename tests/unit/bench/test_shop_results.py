"""bench.shop_results: the relay's latency per phase and its stages, the consumer's
cycle, the rows, the ratio, the goals; and the "shop" part of `--json`."""

from __future__ import annotations

import json
import math

import pytest

from bench.shop import LABELS
from bench.shop_results import (
    RELAY_GOAL_MS,
    Interval,
    bursts,
    consumer_cycle,
    idle_orders,
    relay_alone,
    relay_goals,
    relay_phase,
    spread,
)
from bench.summary import (
    BurstsJson,
    GoalJson,
    IdleOrdersJson,
    RatioJson,
    RelayPhaseJson,
    ShopJson,
    ShopRowJson,
    ShopSettingsJson,
    SpreadJson,
)
from tests.unit.bench.shop_factories import T0, make_shop, received, written


def test_a_spread_is_nearest_rank_in_milliseconds_without_nans() -> None:
    values = [n / 1000 for n in range(1, 101)] + [math.nan]

    got = spread(values)

    assert got == {
        "count": 100,
        "p50_ms": pytest.approx(50.0),
        "p90_ms": pytest.approx(90.0),
        "p99_ms": pytest.approx(99.0),
        "max_ms": pytest.approx(100.0),
    }


def test_an_empty_spread_counts_nothing_and_has_no_figures() -> None:
    got = spread([math.nan])

    assert got["count"] == 0
    assert math.isnan(got["p50_ms"])
    assert math.isnan(got["p99_ms"])
    assert math.isnan(got["max_ms"])


def test_a_phase_takes_its_topics_events_that_occurred_in_its_intervals() -> None:
    samples = [
        received(0.0, 0.010, 0.012),  # at the start: in
        received(0.5, 0.530, 0.540, kind="shop.order.v1.OrderConfirmed"),
        received(1.0, 1.010, 1.020),  # at the end: out
        received(0.6, 0.610, 0.620, topic="bench-relay"),  # another topic: out
        received(2.5, 2.510, 2.530),  # in the second interval
    ]
    intervals = [Interval(T0, T0 + 1), Interval(T0 + 2, T0 + 3)]

    phase = relay_phase("under load", "load", samples, intervals, topic="order")

    assert phase["events"] == 3
    assert phase["expected"] is None
    assert phase["commit_to_consumer"]["count"] == 3
    assert phase["commit_to_consumer"]["p50_ms"] == pytest.approx(30.0)
    assert phase["commit_to_consumer"]["max_ms"] == pytest.approx(40.0)
    relay, consumer = phase["stages"].values()
    assert relay["p50_ms"] == pytest.approx(10.0)  # occurred to stored
    assert relay["max_ms"] == pytest.approx(30.0)
    assert consumer["p50_ms"] == pytest.approx(10.0)  # stored to handler
    assert consumer["max_ms"] == pytest.approx(20.0)
    assert list(phase["by_type"]) == ["OrderConfirmed", "OrderPlaced"]
    assert phase["by_type"]["OrderConfirmed"]["p50_ms"] == pytest.approx(40.0)


def test_an_event_missing_from_the_stream_counts_in_the_whole_but_not_in_the_stages() -> None:
    phase = relay_phase(
        "idle", "idle", [received(0.0, math.nan, 0.005)], [Interval(T0, T0 + 1)], topic="order"
    )

    assert phase["commit_to_consumer"]["count"] == 1
    assert [stage["count"] for stage in phase["stages"].values()] == [0, 0]


def test_the_consumers_cycle_counts_only_events_that_were_waiting() -> None:
    samples = [
        received(0.000, 0.001, 0.002),
        received(0.000, 0.001, 0.004),  # stored before the first was handled: 2 ms
        received(0.000, 0.003, 0.007),  # stored before the second was handled: 3 ms
        received(0.100, 0.101, 0.102),  # stored after: the consumer waited for it
        received(0.000, 0.001, 0.003, topic="bench-relay"),  # another topic's own order
        received(0.000, math.nan, 0.110),  # storage time unknown: no gap
    ]

    cycle = consumer_cycle(samples)

    assert cycle["count"] == 2
    assert cycle["p50_ms"] == pytest.approx(2.0)
    assert cycle["max_ms"] == pytest.approx(3.0)


def test_events_stored_close_together_form_one_burst() -> None:
    samples = [
        received(0.0, 0.0100, 0.02),
        received(0.0, 0.0105, 0.02),
        received(0.0, 0.0119, 0.02),  # 1.4 ms after the one before: the same burst
        received(0.0, 0.0400, 0.05),  # 28 ms later: the relay's next batch
        received(0.0, 0.1000, 0.11),
        received(0.0, 0.1010, 0.11),
        received(0.0, math.nan, 0.12),  # not in the stream: in no burst
    ]

    got = bursts(samples)

    assert (got["bursts"], got["events_p50"], got["events_max"]) == (3, 2.0, 3)
    assert got["gap_ms"] == pytest.approx(2.0)
    assert got["between"]["count"] == 2
    assert got["between"]["p50_ms"] == pytest.approx(30.0)
    assert got["between"]["max_ms"] == pytest.approx(60.0)
    assert bursts([])["bursts"] == 0


def test_bursts_follow_one_another_only_within_an_interval() -> None:
    samples = [
        received(0.0, 0.010, 0.02),
        received(0.5, 0.510, 0.52),  # 500 ms on, in the same window
        received(5.0, 5.010, 5.02),  # the next window: not 4.5 s after the last burst
        received(5.1, 5.110, 5.12),
    ]
    windows = [Interval(T0, T0 + 1), Interval(T0 + 5, T0 + 6)]

    got = bursts(samples, windows)

    assert got["bursts"] == 4
    assert got["between"]["count"] == 2
    assert got["between"]["p50_ms"] == pytest.approx(100.0)
    assert got["between"]["max_ms"] == pytest.approx(500.0)


def test_the_relay_alone_splits_each_event_into_its_four_stages() -> None:
    writes = [
        written("a", 0.0, 0.0004, 0.0010, 0.0020),
        written("b", 1.0, 1.0002, 1.0006, 1.0016),
        written("lost", 2.0, 2.0002, 2.0006, 2.0016),
    ]
    samples = [
        received(0.0, 0.0015, 0.0030, topic="bench-relay", event_id="a"),
        received(1.0, 1.0012, 1.0020, topic="bench-relay", event_id="b"),
        received(0.0, 0.0015, 0.0030, topic="order", event_id="lost"),  # not its topic
    ]

    phase = relay_alone("alone", writes, samples, topic="bench-relay")

    assert (phase["events"], phase["expected"]) == (2, 3)
    assert phase["commit_to_consumer"]["p50_ms"] == pytest.approx(2.0)
    assert phase["commit_to_consumer"]["max_ms"] == pytest.approx(3.0)
    built, woken, acknowledged, handled = phase["stages"].values()
    assert (built["p50_ms"], built["max_ms"]) == pytest.approx((0.2, 0.4))
    assert (woken["p50_ms"], woken["max_ms"]) == pytest.approx((0.4, 0.6))
    assert (acknowledged["p50_ms"], acknowledged["max_ms"]) == pytest.approx((1.0, 1.0))
    assert (handled["p50_ms"], handled["max_ms"]) == pytest.approx((0.4, 1.0))


def test_orders_one_at_a_time_count_their_failures() -> None:
    idle = idle_orders([0.01, 0.02], ["UNAVAILABLE: no", "INTERNAL: x"])

    assert (idle["orders"], idle["errors"]) == (4, 2)
    assert idle["error_samples"] == ["UNAVAILABLE: no", "INTERNAL: x"]
    assert idle["latency"]["p50_ms"] == pytest.approx(10.0)


def test_a_relay_goal_is_met_at_or_below_twenty_ms_and_never_without_events() -> None:
    shop = make_shop()
    slow = json.loads(json.dumps(shop["relay"][0]))
    slow["commit_to_consumer"]["p50_ms"] = RELAY_GOAL_MS + 0.1
    empty = json.loads(json.dumps(shop["relay"][0]))
    empty["commit_to_consumer"] = spread([])

    goals = relay_goals([shop["relay"][1], slow, empty])

    assert [goal["met"] for goal in goals] == [True, False, False]
    assert goals[0]["bound"] == RELAY_GOAL_MS
    assert goals[0]["comparison"] == "<="
    assert "idle" in goals[0]["figure"]


def test_each_row_gives_every_mesh_process_its_cpu_per_call() -> None:
    get, place = make_shop()["rows"]

    # PlaceOrder: 0.4 s of order's a second at 100 and 90 orders/s, 95 on average.
    assert place["cpu_us_per_call"]["order"] == pytest.approx(4210.5, abs=0.1)
    assert place["cpu_us_per_call"]["payment"] == pytest.approx(2105.3, abs=0.1)
    assert place["cpu_us_per_call"]["nats"] == pytest.approx(1052.6, abs=0.1)
    assert place["cpu_us_per_call"]["product"] == 0
    assert place["mesh_cpu_us_per_call"] == pytest.approx(7368.4, abs=0.1)
    assert place["consumer_cpu_us_per_call"] == pytest.approx(526.3, abs=0.1)
    assert place["load_cpu_us_per_call"] == pytest.approx(210.5, abs=0.1)
    assert list(place["cpu_us_per_call"]) == list(LABELS)
    # GetProduct: the product process is the server.
    assert get["cpu_us_per_call"]["product"] == pytest.approx(473.7, abs=0.1)
    assert get["p50_ms"] == pytest.approx(8.0)
    assert place["p99_ms"] == pytest.approx(400.0)


def test_the_ratio_is_placeorder_over_getproduct_per_round() -> None:
    shop = make_shop()

    assert shop["ratio"]["rows"] == "2/1"
    assert shop["ratio"]["calls_per_s_per_round"] == pytest.approx([0.05, 0.05])
    assert shop["ratio"]["calls_per_s_median"] == pytest.approx(0.05)
    assert shop["p50_over_baseline"] == pytest.approx(20.0)
    assert shop["p99_over_baseline"] == pytest.approx(20.0)


def test_the_shop_part_has_every_key_its_types_declare_in_order() -> None:
    shop = make_shop()

    assert list(shop) == list(ShopJson.__annotations__)
    assert list(shop["settings"]) == list(ShopSettingsJson.__annotations__)
    assert list(shop["ratio"]) == list(RatioJson.__annotations__)
    assert list(shop["idle_orders"]) == list(IdleOrdersJson.__annotations__)
    for row in shop["rows"]:
        assert list(row) == list(ShopRowJson.__annotations__)
    for phase in shop["relay"]:
        assert list(phase) == list(RelayPhaseJson.__annotations__)
        assert list(phase["commit_to_consumer"]) == list(SpreadJson.__annotations__)
        assert list(phase["bursts"]) == list(BurstsJson.__annotations__)
    for goal in shop["goals"]:
        assert list(goal) == list(GoalJson.__annotations__)
    assert [phase["phase"] for phase in shop["relay"]] == ["under load", "idle", "relay alone"]
    json.dumps(shop)  # as --json writes it
