"""EDS: the registered instances of one service version, per cluster a sidecar asks for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from mesh.envoy._common import socket_address
from mesh.envoy._model import MeshView
from mesh.registry import Endpoint

__all__ = ["endpoints"]

_MAX_PORT = 65535


def endpoints(view: MeshView, names: Sequence[str]) -> list[Any]:
    """One assignment per requested cluster name, in the order asked. A name that is
    no service version, or one without instances, gets an empty assignment: Envoy
    keeps a cluster warming until it gets one, and would wait for it otherwise."""
    return [_assignment(view, name) for name in names]


def _assignment(view: MeshView, name: str) -> Any:
    # Service and version names have no '_', so the first one splits the name.
    service, _, version = name.partition("_")
    lb_endpoints = [
        _lb_endpoint(instance, address)
        for instance in sorted(
            view.endpoints.get(service, ()), key=lambda e: (e.address, e.instance_id)
        )
        if instance.version == version and (address := _split_address(instance.address))
    ]
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if lb_endpoints:
        assignment.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)
        )
    return assignment


def _lb_endpoint(instance: Endpoint, address: tuple[str, int]) -> Any:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=socket_address(*address),
            hostname=instance.instance_id,  # what /clusters shows next to the address
        )
    )


def _split_address(address: str) -> tuple[str, int] | None:
    """Host and port of `host:port` or `[v6 host]:port`; None for anything else, left out
    rather than failing the whole assignment (registry values come from instances)."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) <= _MAX_PORT:
        return None
    return host, int(port)
