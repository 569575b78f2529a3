"""The real grpcurl binary lists, describes and calls services through reflection, as admin,
and, as identities that may not use reflection, through generated/shop.binpb."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.harness.mesh import REPO, MeshHarness

# instance -> its service and methods
SERVICES = {
    "product-1": (
        "shop.product.v1.ProductService",
        ("GetProduct", "BatchGetProducts", "ListProducts", "CreateProduct"),
    ),
    "inventory-1": (
        "shop.inventory.v1.InventoryService",
        ("GetStock", "AdjustStock", "ReserveStock", "ReleaseStock", "GetReservation"),
    ),
    "order-1": ("shop.order.v1.OrderService", ("PlaceOrder", "GetOrder", "ListOrders")),
}


async def _grpcurl(
    binary: str,
    mesh: MeshHarness,
    *args: str,
    body: object = None,
    tls: bool = True,
    instance: str = "product-1",
    identity: str = "admin",
    protoset: bool = False,
) -> tuple[int, str]:
    """grpcurl [tls flags] [-protoset] [-d body] <instance's address> args..."""
    certs = mesh.config.certs_dir
    endpoint = mesh.instances[instance].endpoint
    assert endpoint is not None
    options = ["-connect-timeout", "3", "-cacert", str(certs / "ca.crt")]
    if tls:
        options += ["-cert", str(certs / f"{identity}.crt"), "-key", str(certs / f"{identity}.key")]
    if protoset:
        options += ["-protoset", str(REPO / "generated" / "shop.binpb")]
    if body is not None:
        options += ["-d", json.dumps(body)]
    process = await asyncio.create_subprocess_exec(
        binary, *options, endpoint.address, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, output.decode()


@pytest.mark.parametrize("instance", SERVICES)
async def test_lists_services_through_reflection(
    shop: MeshHarness, binaries: dict[str, str], instance: str
) -> None:
    code, output = await _grpcurl(binaries["grpcurl"], shop, "list", instance=instance)
    assert code == 0, output
    assert set(output.split()) == {
        SERVICES[instance][0],
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize("instance", SERVICES)
async def test_describes_a_service(
    shop: MeshHarness, binaries: dict[str, str], instance: str
) -> None:
    service, methods = SERVICES[instance]
    code, output = await _grpcurl(binaries["grpcurl"], shop, "describe", service, instance=instance)
    assert code == 0, output
    for method in methods:
        assert f"rpc {method} " in output


async def test_calls_a_method(shop: MeshHarness, binaries: dict[str, str]) -> None:
    product_id = f"sku-grpcurl-{uuid.uuid4().hex[:6]}"
    body = {
        "product": {
            "productId": product_id,
            "name": "Via grpcurl",
            "price": {"currencyCode": "EUR", "units": "7"},
        }
    }
    code, output = await _grpcurl(
        binaries["grpcurl"], shop, "shop.product.v1.ProductService/CreateProduct", body=body
    )
    assert code == 0, output
    code, output = await _grpcurl(
        binaries["grpcurl"],
        shop,
        "shop.product.v1.ProductService/GetProduct",
        body={"productId": product_id},
    )
    assert code == 0, output
    assert json.loads(output)["product"]["name"] == "Via grpcurl"


@pytest.mark.parametrize("instance", SERVICES)
async def test_calls_the_health_check(
    shop: MeshHarness, binaries: dict[str, str], instance: str
) -> None:
    check = "grpc.health.v1.Health/Check"
    code, output = await _grpcurl(binaries["grpcurl"], shop, check, instance=instance)
    assert code == 0, output
    assert json.loads(output) == {"status": "SERVING"}
    body = {"service": SERVICES[instance][0]}
    code, output = await _grpcurl(binaries["grpcurl"], shop, check, body=body, instance=instance)
    assert code == 0, output
    assert json.loads(output) == {"status": "SERVING"}


async def test_without_a_client_certificate_it_is_refused(
    shop: MeshHarness, binaries: dict[str, str]
) -> None:
    code, output = await _grpcurl(binaries["grpcurl"], shop, "list", tls=False)
    assert code != 0
    assert "ServerReflection" not in output


async def test_an_identity_without_reflection_checks_health_through_the_protoset(
    shop: MeshHarness, binaries: dict[str, str]
) -> None:
    check = "grpc.health.v1.Health/Check"
    code, output = await _grpcurl(binaries["grpcurl"], shop, "list", identity="order")
    assert code != 0
    assert "PermissionDenied" in output  # order may not use reflection
    code, output = await _grpcurl(binaries["grpcurl"], shop, check, identity="order", protoset=True)
    assert code == 0, output
    assert json.loads(output) == {"status": "SERVING"}
