"""Every call is mutual TLS against the mesh CA, and authorised by the caller's SPIFFE id."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import order_pb2, order_pb2_grpc

from mesh.client import DirectDataPlane, MeshClient
from mesh.config import RetryPolicy
from mesh.identity import (
    CertificateAuthority,
    IdentityFiles,
    SpiffeId,
    channel_credentials,
    issue_certificate,
)
from mesh.registry import Endpoint
from tests.harness.inprocess import IDENTITY_OF
from tests.harness.mesh import MeshHarness
from tests.harness.metrics import scrape_instance, value


def _address(mesh: MeshHarness, instance_id: str = "product-1") -> str:
    endpoint = mesh.instances[instance_id].endpoint
    assert endpoint is not None
    return endpoint.address


def _health_calls(mesh: MeshHarness) -> float:
    samples = scrape_instance(mesh.instances["product-1"])
    return value(
        samples, "grpc_server_started_total",
        grpc_type="unary", grpc_service="grpc.health.v1.Health", grpc_method="Check",
    )  # fmt: skip


async def _check(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _tls_channel(mesh: MeshHarness, cert: bytes, key: bytes) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(mesh.config.certs_dir / "ca.crt").read_bytes(),
        private_key=key,
        certificate_chain=cert,
    )
    return grpc.aio.secure_channel(_address(mesh), credentials)


async def test_admin_certificate_is_accepted(shop: MeshHarness) -> None:
    certs = shop.config.certs_dir
    channel = _tls_channel(
        shop, (certs / "admin.crt").read_bytes(), (certs / "admin.key").read_bytes()
    )
    async with channel:
        assert await _check(channel) == grpc.StatusCode.OK


async def test_plaintext_client_is_refused(shop: MeshHarness) -> None:
    before = _health_calls(shop)
    async with grpc.aio.insecure_channel(_address(shop)) as channel:
        assert await _check(channel) == grpc.StatusCode.UNAVAILABLE
    assert _health_calls(shop) == before


async def test_client_certificate_from_another_ca_is_refused(shop: MeshHarness) -> None:
    # Same SPIFFE id as the real admin: only the issuer differs.
    impostor_ca = CertificateAuthority.create("Some other CA")
    cert, key = issue_certificate(impostor_ca, SpiffeId("shop.local", "default", "admin"))
    before = _health_calls(shop)
    async with _tls_channel(shop, cert, key) as channel:
        assert await _check(channel) == grpc.StatusCode.UNAVAILABLE
    assert _health_calls(shop) == before


async def test_expired_client_certificate_is_refused(shop: MeshHarness) -> None:
    ca = CertificateAuthority.load(shop.config.certs_dir)
    now = dt.datetime.now(dt.UTC)
    cert, key = issue_certificate(
        ca,
        SpiffeId("shop.local", "default", "admin"),
        not_before=now - dt.timedelta(days=2),
        not_after=now - dt.timedelta(days=1),
    )
    before = _health_calls(shop)
    async with _tls_channel(shop, cert, key) as channel:
        assert await _check(channel) == grpc.StatusCode.UNAVAILABLE
    assert _health_calls(shop) == before


async def test_caller_outside_the_table_is_denied_by_name(shop: MeshHarness) -> None:
    # product may call nothing on order; the table in mesh.yaml allows only admin there.
    stub = order_pb2_grpc.OrderServiceStub(shop.client("product").channel("order"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.GetOrder(order_pb2.GetOrderRequest(order_id="ord-x"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://shop.local/ns/default/sa/product" in (denied.value.details() or "")


async def test_table_allows_listed_methods_only(shop: MeshHarness) -> None:
    inventory = inventory_pb2_grpc.InventoryServiceStub(shop.client("order").channel("inventory"))
    # order may reserve and release, but not adjust stock.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await inventory.AdjustStock(inventory_pb2.AdjustStockRequest(product_id="sku-x", delta=5))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await inventory.ReleaseStock(inventory_pb2.ReleaseStockRequest(order_id="ord-none"))
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND  # allowed, and answered


async def test_health_is_open_to_every_mesh_identity(shop: MeshHarness, certs_dir: Path) -> None:
    for identity in ("product", "inventory", "order"):
        channel = _tls_channel(
            shop,
            (certs_dir / f"{identity}.crt").read_bytes(),
            (certs_dir / f"{identity}.key").read_bytes(),
        )
        async with channel:
            assert await _check(channel) == grpc.StatusCode.OK


async def test_rich_error_details_reach_the_caller(shop: MeshHarness) -> None:
    from google.rpc import error_details_pb2

    stub = inventory_pb2_grpc.InventoryServiceStub(shop.client().channel("inventory"))
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.ReserveStock(
            inventory_pb2.ReserveStockRequest(
                order_id="", items=[inventory_pb2.ReservationItem(product_id="sku-a", quantity=0)]
            )
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(invalid.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    fields = {violation.field for violation in bad.field_violations}
    assert {"order_id", "items[0].quantity"} <= fields


class LyingSource:
    """A registry entry under `called` that says whatever `declared` service it likes:
    entries are written by the instances themselves."""

    def __init__(self, called: str, declared: str, address: str) -> None:
        self._called = called
        self._endpoint = Endpoint(declared, "impostor", address)

    async def endpoints(self, service: str) -> AsyncIterator[frozenset[Endpoint]]:
        yield frozenset([self._endpoint] if service == self._called else [])
        await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("service", "declared", "refused"),
    [
        ("product", "product", True),
        ("product", "inventory", True),  # a registry entry that tells the truth about itself
        ("inventory", "inventory", False),
    ],
)
async def test_the_client_checks_that_an_endpoint_is_the_service_it_calls(
    shop: MeshHarness, service: str, declared: str, refused: bool
) -> None:
    """An inventory instance registered under "product" cannot take product's calls:
    it cannot prove product's identity, so the TLS handshake fails before any call."""
    client = MeshClient(
        DirectDataPlane(
            LyingSource(service, declared, _address(shop, "inventory-1")),
            channel_credentials(IdentityFiles(shop.config.certs_dir, "admin")),
            replace(shop.config.client, timeout=3.0, retry=RetryPolicy(max_attempts=1)),
            identity_of=IDENTITY_OF,
        )
    )
    async with client:
        status = await _check(client.channel(service))

    assert status == (grpc.StatusCode.UNAVAILABLE if refused else grpc.StatusCode.OK)
