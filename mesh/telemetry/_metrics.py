"""Prometheus metrics with the names and labels of Go's grpc-prometheus.

grpc_code values are Go's code names ("OK", "NotFound", "Unavailable"), so existing
dashboards and alerts written for grpc-prometheus work unchanged. Label children are
cached per method and code: looking them up costs more than incrementing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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


@dataclass
class MethodMetrics:
    """Pre-labelled children for one method; handled children are made per code."""

    started: Counter
    handling: Histogram
    _handled: Counter
    _labels: tuple[str, str, str]
    _by_code: dict[grpc.StatusCode, Counter] = field(default_factory=dict)

    def handled(self, code: grpc.StatusCode) -> Counter:
        child = self._by_code.get(code)
        if child is None:
            child = self._handled.labels(*self._labels, _GO_CODES[code])
            self._by_code[code] = child
        return child


class _RpcFamily:
    """grpc_<side>_started_total, grpc_<side>_handled_total, grpc_<side>_handling_seconds."""

    def __init__(self, registry: CollectorRegistry, side: str, subject: str) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self._started = Counter(
            f"grpc_{side}_started_total", f"RPCs started {subject}.", labels, registry=registry
        )
        self._handled = Counter(
            f"grpc_{side}_handled_total",
            f"RPCs completed {subject}, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self._handling = Histogram(
            f"grpc_{side}_handling_seconds",
            f"Latency of RPCs {subject}.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._methods: dict[str, MethodMetrics] = {}
        self._lock = threading.Lock()

    def method(self, full_method: str, kind: str = "unary") -> MethodMetrics:
        found = self._methods.get(full_method)
        if found is None:
            with self._lock:
                labels = (kind, *split_method(full_method))
                found = MethodMetrics(
                    started=self._started.labels(*labels),
                    handling=self._handling.labels(*labels),
                    _handled=self._handled,
                    _labels=labels,
                )
                self._methods[full_method] = found
        return found


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
