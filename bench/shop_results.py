"""The shop part's figures, from what bench.shop measured: each subject's row, the
ratio of PlaceOrder to GetProduct, the relay's latency per phase split into its
stages, and the goals. Pure functions of the figures.

An event's times, all wall-clock (time.time() on one machine): `occurred_at`, set
when the service built it, just before the transaction that records it commits; for
the relay alone also the commit, the relay's publish call and the broker's
acknowledgement (bench.relay_writer); `stored_at`, when JetStream stored it (from
the message's metadata); and `received_at`, when the consumer's handler got it
(bench.relay_consumer).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.load import percentile
from bench.results import SubjectResult, ratio
from bench.summary import (
    BurstsJson,
    GoalJson,
    IdleOrdersJson,
    RelayPhaseJson,
    ShopJson,
    ShopRowJson,
    ShopSettingsJson,
    SpreadJson,
    ThreadPlacement,
)

__all__ = [
    "BROKER",
    "CONSUMER",
    "RELAY_GOAL_MS",
    "Interval",
    "Received",
    "ShopSubject",
    "Written",
    "bursts",
    "consumer_cycle",
    "idle_orders",
    "relay_alone",
    "relay_goals",
    "relay_phase",
    "shop_row",
    "shop_summary",
    "spread",
]

RELAY_GOAL_MS = 20.0  # p50 from commit to consumer: at most
BURST_GAP = 0.002  # seconds between two storage times that start a new burst
BROKER = "nats"  # label of the broker among a window's tracked processes
CONSUMER = "consumer"  # ... and of the relay consumer's process


@dataclass(frozen=True)
class Received:
    """One event as the consumer got it. Picklable: it crosses the consumer's pipe."""

    topic: str
    event_id: str
    type: str
    occurred_at: float
    received_at: float
    stored_at: float  # NaN: not found in the stream


@dataclass(frozen=True)
class Written:
    """One event of the relay alone, as its writer saw it."""

    event_id: str
    occurred_at: float
    committed_at: float
    publish_called_at: float
    acknowledged_at: float


@dataclass(frozen=True)
class Interval:
    """A stretch of wall-clock time, start included, end not."""

    start: float
    end: float

    def holds(self, moment: float) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class ShopSubject:
    """A row and which of the mesh's processes served it (`server`, the others are
    the window's tracked processes)."""

    result: SubjectResult
    method: str
    server: str  # its label: "product" or "order"
    in_flight: int


def spread(seconds: Iterable[float]) -> SpreadJson:
    """Percentiles (nearest rank) of durations in seconds, in ms; NaNs are left out."""
    ordered = sorted(x for x in seconds if not math.isnan(x))

    def ms(quantile: float) -> float:
        return 1000.0 * percentile(ordered, quantile)

    return {
        "count": len(ordered),
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "max_ms": 1000.0 * ordered[-1] if ordered else math.nan,
    }


def consumer_cycle(samples: Sequence[Received]) -> SpreadJson:
    """The consumer's time per event while events wait for it: the gap between two
    deliveries in a row on a topic when the second was stored before the first was
    handled (so it was waiting, and the gap is the consumer's own ack, fetch and
    handling, one event in flight at a time)."""
    gaps = []
    by_topic: dict[str, list[Received]] = {}
    for sample in samples:
        by_topic.setdefault(sample.topic, []).append(sample)
    for received in by_topic.values():
        ordered = sorted(received, key=lambda s: s.received_at)
        for first, second in itertools.pairwise(ordered):
            if second.stored_at < first.received_at:  # NaN compares False: left out
                gaps.append(second.received_at - first.received_at)
    return spread(gaps)


def bursts(
    samples: Sequence[Received], intervals: Sequence[Interval] = (), gap: float = BURST_GAP
) -> BurstsJson:
    """The relay's batches as the broker stored them: events stored less than `gap` s
    after the one before form a burst (a batch's publishes are sent together, so the
    broker stores them within a millisecond or so); their sizes, and the time from the
    start of one burst to the next, which under load is the relay's cycle (its read,
    the batch's round trip to the broker, the marking). With `intervals`, only bursts
    of events that occurred in the same interval follow one another (not the last of
    one window and the first of the next)."""
    groups: dict[int, list[float]] = {}
    for sample in samples:
        if math.isnan(sample.stored_at):
            continue
        where = next((n for n, span in enumerate(intervals) if span.holds(sample.occurred_at)), -1)
        groups.setdefault(where, []).append(sample.stored_at)
    sizes: list[int] = []
    between: list[float] = []
    for stored in groups.values():
        starts, counts = _bursts_of(sorted(stored), gap)
        sizes += counts
        between += [later - earlier for earlier, later in itertools.pairwise(starts)]
    ordered = sorted(sizes)
    return {
        "gap_ms": 1000.0 * gap,
        "bursts": len(sizes),
        "events_p50": float(percentile(ordered, 0.5)),
        "events_max": ordered[-1] if ordered else 0,
        "between": spread(between),
    }


def _bursts_of(stored: Sequence[float], gap: float) -> tuple[list[float], list[int]]:
    """The start and the size of each burst of the ascending `stored` times."""
    starts: list[float] = []
    sizes: list[int] = []
    previous = -math.inf
    for moment in stored:
        if moment - previous >= gap:
            starts.append(moment)
            sizes.append(0)
        sizes[-1] += 1
        previous = moment
    return starts, sizes


def _short(kind: str) -> str:
    return kind.rsplit(".", 1)[-1]


def _by_type(
    samples: Sequence[Received], duration: Callable[[Received], float]
) -> dict[str, SpreadJson]:
    kinds = sorted({s.type for s in samples})
    return {_short(k): spread(duration(s) for s in samples if s.type == k) for k in kinds}


def relay_phase(
    phase: str,
    detail: str,
    samples: Sequence[Received],
    intervals: Sequence[Interval],
    *,
    topic: str,
    expected: int | None = None,
) -> RelayPhaseJson:
    """The relay's latency for the events of `topic` that occurred within `intervals`:
    as a whole, and split at the broker's storage time into the relay's share (its
    wake-up, read, publish: up to the stream storing the event) and the consumer's
    (until the handler has it)."""
    chosen = [
        s for s in samples if s.topic == topic and any(i.holds(s.occurred_at) for i in intervals)
    ]

    def total(s: Received) -> float:
        return s.received_at - s.occurred_at

    return {
        "phase": phase,
        "detail": detail,
        "events": len(chosen),
        "expected": expected,
        "commit_to_consumer": spread(total(s) for s in chosen),
        "stages": {
            "occurred to stored (commit, relay wake-up and read, publish)": spread(
                s.stored_at - s.occurred_at for s in chosen
            ),
            "stored to handler (consumer: ack of the previous, fetch)": spread(
                s.received_at - s.stored_at for s in chosen
            ),
        },
        "by_type": _by_type(chosen, total),
        "consumer_cycle": consumer_cycle(chosen),
        "bursts": bursts(chosen, intervals),
    }


def relay_alone(
    detail: str, written: Sequence[Written], samples: Sequence[Received], *, topic: str
) -> RelayPhaseJson:
    """The relay's latency without a saga: the writer's events joined by id with what
    the consumer received, each split into the five stages the two saw."""
    got = {s.event_id: s for s in samples if s.topic == topic}
    pairs = [(w, got[w.event_id]) for w in written if w.event_id in got]
    received = [s for _, s in pairs]
    return {
        "phase": "relay alone",
        "detail": detail,
        "events": len(pairs),
        "expected": len(written),
        "commit_to_consumer": spread(s.received_at - w.occurred_at for w, s in pairs),
        "stages": {
            "built to committed (the transaction)": spread(
                w.committed_at - w.occurred_at for w, _ in pairs
            ),
            "committed to publish call (notify, wake-up, lease claim, read)": spread(
                w.publish_called_at - w.committed_at for w, _ in pairs
            ),
            "publish call to broker's ack (stored, acknowledged)": spread(
                w.acknowledged_at - w.publish_called_at for w, _ in pairs
            ),
            "broker's ack to handler (consumer: ack of the previous, fetch)": spread(
                s.received_at - w.acknowledged_at for w, s in pairs
            ),
        },
        "by_type": _by_type(received, lambda s: s.received_at - s.occurred_at),
        "consumer_cycle": consumer_cycle(received),
        "bursts": bursts(received),
    }


def idle_orders(latencies: Sequence[float], errors: Sequence[str]) -> IdleOrdersJson:
    """The orders placed one at a time: each call's latency (s), and the failures."""
    return {
        "orders": len(latencies) + len(errors),
        "errors": len(errors),
        "error_samples": list(errors[:5]),
        "latency": spread(latencies),
    }


def shop_row(subject: ShopSubject, labels: Sequence[str], cores: Sequence[int]) -> ShopRowJson:
    """`labels`: the mesh's processes (and the broker), in the order to show them."""
    r = subject.result

    def seconds(label: str) -> float:
        return r.server_cpu if label == subject.server else r.tracked_cpu(label)

    per_call = {label: r.us_per_call(seconds(label)) for label in labels}
    return {
        "row": r.row,
        "name": r.name,
        "detail": r.detail,
        "method": subject.method,
        "in_flight": subject.in_flight,
        "calls": r.calls,
        "measured_s": r.duration,
        "calls_per_s": r.calls_per_second,
        "calls_per_s_per_round": r.per_round,
        "p50_ms": r.latency_ms(0.5),
        "p90_ms": r.latency_ms(0.9),
        "p99_ms": r.latency_ms(0.99),
        "max_ms": 1000.0 * r.latencies[-1] if r.latencies else None,
        "errors": r.errors,
        "error_samples": r.error_samples,
        "cpu_us_per_call": per_call,
        "mesh_cpu_us_per_call": r.us_per_call(sum(seconds(label) for label in labels)),
        "consumer_cpu_us_per_call": r.us_per_call(r.tracked_cpu(CONSUMER)),
        "load_cpu_us_per_call": r.us_per_call(sum(r.client_cpu)),
        "core_busy_pct": {str(core): r.percent(r.core_cpu(core)) for core in cores},
        "other_cpu_pct": r.percent(r.other_cpu),
    }


def _goal(figure: str, bound: float, value: float) -> GoalJson:
    return {
        "figure": figure,
        "comparison": "<=",
        "bound": bound,
        "value": value,
        "met": value <= bound,  # NaN never meets
    }


def relay_goals(phases: Sequence[RelayPhaseJson]) -> list[GoalJson]:
    """The relay's p50 from commit to consumer, in each phase."""
    return [
        _goal(
            f"relay p50, commit to consumer, {phase['phase']} (ms)",
            RELAY_GOAL_MS,
            phase["commit_to_consumer"]["p50_ms"],
        )
        for phase in phases
    ]


def _over(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def shop_summary(
    baseline: ShopSubject,
    orders: ShopSubject,
    *,
    labels: Sequence[str],
    settings: ShopSettingsJson,
    cores: Sequence[int],
    idle: IdleOrdersJson,
    phases: Sequence[RelayPhaseJson],
    placement_check: Mapping[str, ThreadPlacement] | None = None,
) -> ShopJson:
    """What `--json` holds under "shop": `baseline` is GetProduct's row, `orders`
    PlaceOrder's."""
    base, placed = baseline.result, orders.result
    return {
        "settings": settings,
        "rows": [shop_row(s, labels, cores) for s in (baseline, orders)],
        "ratio": ratio(placed, base).as_json(),
        "p50_over_baseline": _over(placed.latency_ms(0.5), base.latency_ms(0.5)),
        "p99_over_baseline": _over(placed.latency_ms(0.99), base.latency_ms(0.99)),
        "idle_orders": idle,
        "relay": list(phases),
        "placement_check": dict(placement_check or {}),
        "goals": relay_goals(phases),
    }
