"""A fixed mesh and sidecar for the Envoy generator tests: inventory with v1 and v2
split 90/10, order calling it, mesh.yaml's authz rules, and fake paths."""

from __future__ import annotations

from pathlib import Path

from mesh.config import (
    AuthzRule,
    FaultPolicy,
    RateLimitPolicy,
    RouteRetries,
    ServiceSpec,
    TrafficPolicy,
)
from mesh.envoy import MeshView, SidecarNode
from mesh.registry import Endpoint

TRUST_DOMAIN = "shop.local"
NAMESPACE = "default"

# As in mesh.yaml, copied so that editing the file does not change the goldens.
AUTHZ = (
    AuthzRule(callers=("*",), methods=("grpc.health.v1.Health/*",)),
    AuthzRule(callers=("admin",), methods=("*",)),
    AuthzRule(
        callers=("order",),
        methods=(
            "shop.product.v1.ProductService/BatchGetProducts",
            "shop.inventory.v1.InventoryService/ReserveStock",
            "shop.inventory.v1.InventoryService/ReleaseStock",
        ),
    ),
)

SERVICES = {
    "inventory": ServiceSpec(
        name="inventory",
        module="services.inventory",
        versions={"v1": 2, "v2": 1},
        policy=TrafficPolicy(weights={"v1": 90, "v2": 10}),
    ),
    "order": ServiceSpec(
        name="order",
        module="services.order",
        policy=TrafficPolicy(
            timeout=3.0,
            retries=RouteRetries(attempts=2, per_try_timeout=1.5),
            faults=FaultPolicy(delay_ms=250, abort_grpc_status=13),
            rate_limit=RateLimitPolicy(tokens_per_second=50, burst=80, enabled_percent=100),
        ),
    ),
}

ENDPOINTS = {
    "inventory": frozenset(
        {
            Endpoint("inventory", "inventory-2", "127.0.0.1:15062", "v1"),
            Endpoint("inventory", "inventory-1", "127.0.0.1:15061", "v1"),
            Endpoint("inventory", "inventory-3", "127.0.0.1:15063", "v2"),
        }
    ),
    "order": frozenset({Endpoint("order", "order-1", "127.0.0.1:15071", "v1")}),
}


def mesh_view() -> MeshView:
    return MeshView(
        trust_domain=TRUST_DOMAIN,
        namespace=NAMESPACE,
        services=SERVICES,
        endpoints=ENDPOINTS,
        authz=AUTHZ,
    )


def sidecar_node(
    certs_dir: Path = Path("/fake/certs"), run_dir: Path = Path("/fake/run")
) -> SidecarNode:
    """order-1's sidecar; files under `certs_dir` (as mesh.identity names them) and
    sockets under `run_dir`."""
    return SidecarNode(
        node_id="order-1",
        service="order",
        version="v1",
        inbound_host="127.0.0.1",
        inbound_port=15071,
        app_socket=str(run_dir / "order-1.app.sock"),
        outbound_socket=str(run_dir / "order-1.outbound.sock"),
        cert_chain=str(certs_dir / "order.crt"),
        private_key=str(certs_dir / "order.key"),
        ca=str(certs_dir / "ca.crt"),
    )
