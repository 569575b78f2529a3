"""Prometheus metrics with the names and labels of Go's grpc-prometheus.

grpc_code values are Go's code names ("OK", "NotFound", "Unavailable"), so existing
dashboards and alerts written for grpc-prometheus work unchanged. The RPC families are
plain per-method counters behind a Prometheus collector (see MethodMetrics).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "ClientMetrics",
    "MethodMetrics",
    "MetricsServer",
    "ServerMetrics",
    "go_code_name",
    "grpc_type",
    "split_method",
]

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# Where Go's codes.Code.String() is not the CamelCase of the Python name.
_GO_SPELLING = {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}


def go_code_name(code: grpc.StatusCode) -> str:
    """UNAVAILABLE -> "Unavailable", NOT_FOUND -> "NotFound", CANCELLED -> "Canceled"."""
    return _GO_SPELLING.get(code) or "".join(part.capitalize() for part in code.name.split("_"))


_GO_CODES = {code: go_code_name(code) for code in grpc.StatusCode}


def split_method(full_method: str) -> tuple[str, str]:
    """ "/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming:
        return "bidi_stream" if response_streaming else "client_stream"
    return "server_stream" if response_streaming else "unary"


class MethodMetrics:
    """Counts of one method, updated only by the event loop's thread: plain integers,
    no locks. (prometheus_client's Counter and Histogram take a lock and several
    Python calls per update, which on a Python gRPC server costs more per call than
    the whole authorisation check.) A scrape reads them from another thread: each value
    it reads is whole and counts only grow, but the series are read one after another,
    so one scrape may count a call in one series and not yet in the next."""

    __slots__ = ("buckets", "handled", "labels", "ok", "started", "total_seconds")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = 0
        self.ok = 0  # calls handled with OK, the common case, kept out of `handled`
        self.handled: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last is +Inf
        self.total_seconds = 0.0

    def start(self) -> None:
        self.started += 1

    def succeeded(self, seconds: float) -> None:
        """A call handled with OK in `seconds`."""
        self.ok += 1
        self._observe(seconds)

    def finish(self, code: grpc.StatusCode, seconds: float) -> None:
        if code is grpc.StatusCode.OK:
            self.ok += 1
        else:
            self.handled[code] = self.handled.get(code, 0) + 1
        self._observe(seconds)

    def _observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total_seconds += seconds

    def handled_by_code(self) -> dict[grpc.StatusCode, int]:
        """Calls handled so far, by status code (codes never seen are absent)."""
        counts = dict(self.handled)
        ok = self.ok
        if ok:
            counts[grpc.StatusCode.OK] = ok
        return counts


class _RpcFamily(Collector):
    """grpc_<side>_started_total, grpc_<side>_handled_total, grpc_<side>_handling_seconds,
    built from every method's MethodMetrics at scrape time."""

    def __init__(self, registry: CollectorRegistry, side: str, subject: str) -> None:
        self._side = side
        self._subject = subject
        self._methods: dict[str, MethodMetrics] = {}
        registry.register(self)

    def method(self, full_method: str, kind: str = "unary") -> MethodMetrics:
        found = self._methods.get(full_method)
        if found is None:
            found = self._methods[full_method] = MethodMetrics((kind, *split_method(full_method)))
        return found

    def collect(self) -> Iterator[Metric]:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        side, subject = self._side, self._subject
        started = CounterMetricFamily(
            f"grpc_{side}_started_total", f"RPCs started {subject}.", labels=labels
        )
        handled = CounterMetricFamily(
            f"grpc_{side}_handled_total",
            f"RPCs completed {subject}, regardless of success or failure.",
            labels=[*labels, "grpc_code"],
        )
        handling = HistogramMetricFamily(
            f"grpc_{side}_handling_seconds", f"Latency of RPCs {subject}.", labels=labels
        )
        bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
        for stats in list(self._methods.values()):
            started.add_metric(stats.labels, stats.started)
            for code, count in stats.handled_by_code().items():
                handled.add_metric([*stats.labels, _GO_CODES[code]], count)
            cumulative = list(itertools.accumulate(stats.buckets))
            handling.add_metric(
                stats.labels, list(zip(bounds, cumulative, strict=True)), stats.total_seconds
            )
        yield from (started, handled, handling)


class ServerMetrics(_RpcFamily):
    """The server family, one observation per handled call."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry, "server", "on the server")


class ClientMetrics(_RpcFamily):
    """The client family, counted per logical call (its retries included once), plus
    the mesh's own retry counter and breaker gauge."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry, "client", "as the mesh client saw them")
        self.retries = Counter(
            "shopmesh_client_retries_total",
            "Attempts after the first, by target service and method.",
            ["grpc_service", "grpc_method"],
            registry=registry,
        )
        self.breaker_open = Gauge(
            "shopmesh_client_breaker_open",
            "1 while the breaker of an endpoint is open or half-open, else 0.",
            ["service", "endpoint"],
            registry=registry,
        )


class MetricsServer:
    """Serves /metrics of `registry` over HTTP on a side port, in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host, registry=registry)
        self._server: WSGIServer = server
        self._thread = thread
        self.address = f"{host}:{server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
