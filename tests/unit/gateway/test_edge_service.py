"""The edge as a mesh service: which mesh service serves a gRPC service, and that it
serves only the services mesh.yaml declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway._descriptors import load_descriptor_set
from gateway.edge import _declared_only, mesh_service
from mesh.errors import MeshError

SHOP = Path(__file__).resolve().parents[3] / "generated" / "shop.binpb"


@pytest.mark.parametrize(
    ("service", "upstreams", "expected"),
    [
        ("shop.order.v1.OrderService", {}, "order"),
        ("shop.auth.v1.AuthService", {}, "auth"),
        ("acme.billing.v2.Invoices", {}, "billing"),
        ("shop.order.v1.OrderService", {"shop.order.v1.OrderService": "orders"}, "orders"),
    ],
)
def test_a_package_names_its_mesh_service(
    service: str, upstreams: dict[str, str], expected: str
) -> None:
    assert mesh_service(service, upstreams) == expected


def test_a_service_outside_the_convention_must_be_named() -> None:
    with pytest.raises(MeshError, match="upstreams"):
        mesh_service("Greeter", {})


def test_only_declared_services_are_served() -> None:
    surface = load_descriptor_set(SHOP)
    served = _declared_only(surface, {"product": object(), "auth": object()}, {})
    assert {m.service for m in served.methods} == {
        "shop.product.v1.ProductService",
        "shop.auth.v1.AuthService",
    }
    assert {m.service for m in surface.methods} > {m.service for m in served.methods}
