"""Experiments on the sidecar path (`--sidecar-variant`, a dev option): changes to
what the Envoys run, made by the benchmark alone, never by mesh.envoy's defaults.

`unpinned` leaves both Envoys to the scheduler (each may run on either core) instead
of on their app's core. The others edit the resources the control plane serves: the
benchmark runs `python -m bench.sidecar_variants <names> <mesh.xds arguments>`, which
wraps mesh.envoy's listener and cluster generators and then runs mesh.xds as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "SCHED_BATCH",
    "UNPINNED",
    "VARIANTS",
    "XDS_VARIANTS",
    "edit_clusters",
    "edit_listeners",
    "parse",
]

UNPINNED = "unpinned"
SCHED_BATCH = "sched-batch"
VARIANTS = {
    UNPINNED: "both Envoys left to the scheduler (not pinned to their app's core)",
    SCHED_BATCH: "both Envoys' threads SCHED_BATCH: a wake-up does not preempt their app",
    "router-only": "inbound and outbound listeners with the router filter only",
    "no-upstream-stats": "inbound grpc_stats without enable_upstream_stats",
    "no-request-id": "both listeners' HCM with generate_request_id false",
    "big-windows": "HTTP/2 stream and connection windows of 16 MiB / 64 MiB, both ways",
    "no-dynamic-stats": "router with dynamic_stats false (drops upstream_rq_time: bench only)",
}
XDS_VARIANTS = frozenset(VARIANTS) - {UNPINNED, SCHED_BATCH}

_HCM_NAME = "envoy.filters.network.http_connection_manager"
_ROUTER = "envoy.filters.http.router"
_GRPC_STATS = "envoy.filters.http.grpc_stats"
_STREAM_WINDOW = 16 * 1024 * 1024
_CONNECTION_WINDOW = 64 * 1024 * 1024


def batch_threads(pid: int) -> None:
    """Every thread of `pid` SCHED_BATCH (threads it starts later inherit it)."""
    import contextlib
    import os

    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setscheduler(int(tid), os.SCHED_BATCH, os.sched_param(0))


def parse(text: str) -> tuple[str, ...]:
    """Comma-separated variant names; raises ValueError for an unknown one."""
    names = tuple(name for name in (part.strip() for part in text.split(",")) if name)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown sidecar variant(s) {', '.join(unknown)}: see {list(VARIANTS)}")
    return names


def _windows(options: Any) -> None:
    options.initial_stream_window_size.value = _STREAM_WINDOW
    options.initial_connection_window_size.value = _CONNECTION_WINDOW


def _edit_manager(manager: Any, variants: frozenset[str]) -> None:
    from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2

    if "router-only" in variants:
        kept = [f for f in manager.http_filters if f.name == _ROUTER]
        del manager.http_filters[:]
        manager.http_filters.extend(kept)
    if "no-request-id" in variants:
        manager.generate_request_id.value = False
    if "big-windows" in variants:
        _windows(manager.http2_protocol_options)
    for http_filter in manager.http_filters:
        if http_filter.name == _GRPC_STATS and "no-upstream-stats" in variants:
            stats = grpc_stats_pb2.FilterConfig()
            http_filter.typed_config.Unpack(stats)
            stats.enable_upstream_stats = False
            http_filter.typed_config.Pack(stats, deterministic=True)
        if http_filter.name == _ROUTER and "no-dynamic-stats" in variants:
            router = router_pb2.Router()
            http_filter.typed_config.Unpack(router)
            router.dynamic_stats.value = False
            http_filter.typed_config.Pack(router, deterministic=True)


def edit_listeners(listeners: Iterable[Any], variants: frozenset[str]) -> list[Any]:
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm_pb2,
    )

    result = list(listeners)
    for listener in result:
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.name != _HCM_NAME:
                    continue
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                _edit_manager(manager, variants)
                network_filter.typed_config.Pack(manager, deterministic=True)
    return result


def edit_clusters(clusters: Iterable[Any], variants: frozenset[str]) -> list[Any]:
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    from mesh.envoy._common import HTTP_PROTOCOL_OPTIONS

    result = list(clusters)
    if "big-windows" not in variants:
        return result
    for cluster in result:
        packed = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
        if packed is None:
            continue
        options = http_protocol_options_pb2.HttpProtocolOptions()
        packed.Unpack(options)
        _windows(options.explicit_http_config.http2_protocol_options)
        packed.Pack(options, deterministic=True)
    return result


def _wrapped(
    generate: Callable[..., list[Any]],
    edit: Callable[[Iterable[Any], frozenset[str]], list[Any]],
    variants: frozenset[str],
) -> Callable[..., list[Any]]:
    def generator(*args: Any) -> list[Any]:
        return edit(generate(*args), variants)

    return generator


def main(argv: Sequence[str]) -> int:
    """`<variants> <mesh.xds arguments>`: the control plane, serving edited resources."""
    from mesh.envoy import _resources
    from mesh.xds._controlplane import main as controlplane_main

    variants = frozenset(parse(argv[0])) & XDS_VARIANTS
    # resources() looks its generators up in its module at each call.
    generators = vars(_resources)
    generators["listeners"] = _wrapped(generators["listeners"], edit_listeners, variants)
    generators["clusters"] = _wrapped(generators["clusters"], edit_clusters, variants)
    return controlplane_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
