"""The real grpcurl binary lists, describes and calls services through reflection, as admin."""

from __future__ import annotations

import asyncio
import json
import uuid

from tests.harness.mesh import MeshHarness


async def _grpcurl(
    binary: str, mesh: MeshHarness, *args: str, body: object = None, tls: bool = True
) -> tuple[int, str]:
    """grpcurl [tls flags] [-d body] <product address> args..."""
    certs = mesh.config.certs_dir
    endpoint = mesh.instances["product-1"].endpoint
    assert endpoint is not None
    options = ["-connect-timeout", "3", "-cacert", str(certs / "ca.crt")]
    if tls:
        options += ["-cert", str(certs / "admin.crt"), "-key", str(certs / "admin.key")]
    if body is not None:
        options += ["-d", json.dumps(body)]
    process = await asyncio.create_subprocess_exec(
        binary, *options, endpoint.address, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, output.decode()


async def test_lists_services_through_reflection(
    shop: MeshHarness, binaries: dict[str, str]
) -> None:
    code, output = await _grpcurl(binaries["grpcurl"], shop, "list")
    assert code == 0, output
    assert set(output.split()) >= {
        "shop.product.v1.ProductService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_describes_a_service(shop: MeshHarness, binaries: dict[str, str]) -> None:
    code, output = await _grpcurl(
        binaries["grpcurl"], shop, "describe", "shop.product.v1.ProductService"
    )
    assert code == 0, output
    for method in ("GetProduct", "ListProducts", "CreateProduct"):
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


async def test_calls_the_health_check(shop: MeshHarness, binaries: dict[str, str]) -> None:
    code, output = await _grpcurl(binaries["grpcurl"], shop, "grpc.health.v1.Health/Check")
    assert code == 0, output
    assert json.loads(output) == {"status": "SERVING"}
    code, output = await _grpcurl(
        binaries["grpcurl"],
        shop,
        "grpc.health.v1.Health/Check",
        body={"service": "shop.product.v1.ProductService"},
    )
    assert json.loads(output) == {"status": "SERVING"}


async def test_without_a_client_certificate_it_is_refused(
    shop: MeshHarness, binaries: dict[str, str]
) -> None:
    code, output = await _grpcurl(binaries["grpcurl"], shop, "list", tls=False)
    assert code != 0
    assert "ServerReflection" not in output
