"""Windows summed up per subject, and subject-to-baseline ratios paired by round.

A subject's figures pool all its windows: calls/s is its calls over its measured time,
latency percentiles are over all its calls, CPU use is its summed CPU seconds over the
summed time. A ratio of calls/s is taken per round, between windows measured seconds
apart, so the machine's slow drift in speed (tens of seconds) largely cancels out of
it; the median over rounds is the headline, min-max shows the spread. A round whose
baseline completed no call has no ratio, and then neither have the median and min-max.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from bench.load import Window, idle_percent, percent_of_core, percentile
from bench.summary import RatioJson, SubjectJson

__all__ = ["Ratio", "SubjectResult", "ratio"]


@dataclass
class SubjectResult:
    """One row: a subject and its windows, one per round, in round order."""

    row: int  # 1-based, as printed
    name: str
    detail: str
    windows: list[Window] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(w.duration for w in self.windows)

    @property
    def elapsed(self) -> float:
        return sum(w.elapsed for w in self.windows)

    @property
    def calls(self) -> int:
        return sum(w.calls for w in self.windows)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.windows)

    @property
    def error_samples(self) -> list[str]:
        return [s for w in self.windows for s in w.error_samples][:5]

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.duration if self.duration > 0 else 0.0

    @property
    def per_round(self) -> list[float]:
        return [w.calls_per_second for w in self.windows]

    @cached_property
    def latencies(self) -> list[float]:
        """Seconds, ascending, of every measured call of every round."""
        return sorted(x for w in self.windows for x in w.latencies)

    def latency_ms(self, quantile: float) -> float:
        return 1000.0 * percentile(self.latencies, quantile)

    def percent(self, seconds: float) -> float:
        """CPU seconds over this subject's measured windows, in percent of one core."""
        return percent_of_core(seconds, self.elapsed)

    def us_per_call(self, seconds: float) -> float:
        """CPU seconds over the windows, in microseconds per completed call."""
        rate = self.calls_per_second
        return self.percent(seconds) / 100.0 / rate * 1e6 if rate > 0 else math.nan

    @property
    def server_cpu(self) -> float:
        return sum(w.server_cpu for w in self.windows)

    @property
    def client_cpu(self) -> list[float]:
        """Per load process, summed over the windows."""
        return [sum(column) for column in zip(*(w.client_cpu for w in self.windows), strict=True)]

    @property
    def driver_cpu(self) -> float:
        return sum(w.driver_cpu for w in self.windows)

    @property
    def background_cpu(self) -> float:
        return sum(w.background_cpu for w in self.windows)

    @property
    def machine_cpu(self) -> float:
        return sum(w.machine_cpu for w in self.windows)

    @property
    def other_cpu(self) -> float:
        return sum(w.other_cpu for w in self.windows)

    @property
    def loop_ran(self) -> float:
        return sum(w.server_loop_ran for w in self.windows)

    @property
    def loop_waited(self) -> float:
        return sum(w.server_loop_waited for w in self.windows)

    def core_cpu(self, core: int) -> float:
        return sum(w.core_cpu.get(core, 0.0) for w in self.windows)

    def tracked_cpu(self, label: str) -> float:
        """CPU seconds of the process tracked as `label` (a sidecar), over the windows."""
        return sum(w.tracked_cpu.get(label, 0.0) for w in self.windows)

    def tracked_switches(self, label: str) -> int:
        """Context switches of the process tracked as `label`, over the windows."""
        return sum(w.tracked_switches.get(label, 0) for w in self.windows)

    def per_call(self, count: float) -> float:
        """`count` (over the measured windows) per completed call; NaN without calls."""
        return count / self.calls if self.calls else math.nan

    def latency_ms_per_round(self, quantile: float) -> list[float]:
        return [1000.0 * percentile(sorted(w.latencies), quantile) for w in self.windows]

    def as_json(self, cores: Sequence[int]) -> SubjectJson:
        return {
            "row": self.row,
            "name": self.name,
            "detail": self.detail,
            "calls": self.calls,
            "measured_s": self.duration,
            "calls_per_s": self.calls_per_second,
            "calls_per_s_per_round": self.per_round,
            "p50_ms": self.latency_ms(0.50),
            "p90_ms": self.latency_ms(0.90),
            "p99_ms": self.latency_ms(0.99),
            "max_ms": 1000.0 * self.latencies[-1] if self.latencies else None,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "server_cpu_pct": self.percent(self.server_cpu),
            "server_loop_thread_ran_pct": self.percent(self.loop_ran),
            "server_loop_thread_waited_for_cpu_pct": self.percent(self.loop_waited),
            # Neither running nor runnable: the loop had no work, so the load did not
            # keep this server busy then.
            "server_loop_thread_idle_pct": idle_percent(
                self.percent(self.loop_ran + self.loop_waited)
            ),
            "server_cpu_us_per_call": self.us_per_call(self.server_cpu),
            "client_cpu_pct": self.percent(sum(self.client_cpu)),
            "client_cpu_pct_per_worker": [self.percent(x) for x in self.client_cpu],
            "client_cpu_us_per_call": self.us_per_call(sum(self.client_cpu)),
            "driver_cpu_pct": self.percent(self.driver_cpu),
            "idle_servers_and_etcd_cpu_pct": self.percent(self.background_cpu),
            "machine_cpu_pct": self.percent(self.machine_cpu),
            "core_busy_pct": {str(core): self.percent(self.core_cpu(core)) for core in cores},
            "other_cpu_pct": self.percent(self.other_cpu),
            "windows": [w.as_json() for w in self.windows],
        }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


@dataclass(frozen=True)
class Ratio:
    """Subject against baseline. calls/s: subject / baseline, per round; latency and
    server CPU per call: baseline / subject, pooled over the rounds. So 1.0 is parity
    and higher is better for the subject everywhere."""

    subject: SubjectResult
    baseline: SubjectResult
    per_round: list[float]

    @property
    def label(self) -> str:
        return f"{self.subject.row}/{self.baseline.row}"

    @property
    def every_round_measured(self) -> bool:
        """At least one round, and a ratio in each. Sorting and min() compare a NaN as
        neither smaller nor larger, so with one in, the median and min-max would depend
        on which round it was."""
        return bool(self.per_round) and not any(math.isnan(x) for x in self.per_round)

    @property
    def median(self) -> float:
        return statistics.median(self.per_round) if self.every_round_measured else math.nan

    @property
    def low(self) -> float:
        return min(self.per_round) if self.every_round_measured else math.nan

    @property
    def high(self) -> float:
        return max(self.per_round) if self.every_round_measured else math.nan

    @property
    def pooled(self) -> float:
        """Of the pooled calls/s: all rounds' calls over all rounds' time."""
        return _ratio(self.subject.calls_per_second, self.baseline.calls_per_second)

    @property
    def p50_inverse(self) -> float:
        return _ratio(self.baseline.latency_ms(0.5), self.subject.latency_ms(0.5))

    @property
    def p99_inverse(self) -> float:
        return _ratio(self.baseline.latency_ms(0.99), self.subject.latency_ms(0.99))

    @property
    def server_cpu_per_call_inverse(self) -> float:
        return _ratio(
            self.baseline.us_per_call(self.baseline.server_cpu),
            self.subject.us_per_call(self.subject.server_cpu),
        )

    def as_json(self) -> RatioJson:
        return {
            "subject": self.subject.name,
            "baseline": self.baseline.name,
            "rows": self.label,
            "calls_per_s_per_round": self.per_round,
            "calls_per_s_median": self.median,
            "calls_per_s_min": self.low,
            "calls_per_s_max": self.high,
            "calls_per_s_pooled": self.pooled,
            "p50_inverse": self.p50_inverse,
            "p99_inverse": self.p99_inverse,
            "server_cpu_per_call_inverse": self.server_cpu_per_call_inverse,
        }


def ratio(subject: SubjectResult, baseline: SubjectResult) -> Ratio:
    """Pair the two subjects' windows by round."""
    per_round = [
        _ratio(s.calls_per_second, b.calls_per_second)
        for s, b in zip(subject.windows, baseline.windows, strict=True)
    ]
    return Ratio(subject, baseline, per_round)
