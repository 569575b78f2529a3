"""The data plane seam: MeshClient hands out whatever channel its data plane opens, one
per service, and closes them; mesh.dataplane picks the plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.client import DataPlane, DirectDataPlane, MeshClient, ServiceChannel, data_plane
from mesh.config import parse_config
from mesh.identity import IdentityFiles, ensure_certificates
from tests.harness.inprocess import StaticSource


class RecordingChannel:
    """A channel of another data plane (a sidecar's, say): what stubs take."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.closed = False

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return (self.service, method)

    unary_stream = stream_unary = stream_stream = unary_unary

    async def close(self) -> None:
        self.closed = True


class RecordingPlane:
    def __init__(self) -> None:
        self.opened: list[RecordingChannel] = []

    def open(self, service: str) -> RecordingChannel:
        channel = RecordingChannel(service)
        self.opened.append(channel)
        return channel


_plane: DataPlane = RecordingPlane()  # mypy checks that the fake fits the protocol


async def test_the_client_hands_out_one_channel_per_service_from_its_plane() -> None:
    plane = RecordingPlane()
    client = MeshClient(plane)

    first = client.channel("product")
    assert client.channel("product") is first  # opened once
    client.channel("inventory")
    await client.aclose()

    assert [c.service for c in plane.opened] == ["product", "inventory"]
    assert all(c.closed for c in plane.opened)
    assert first.unary_unary("/shop.product.v1.ProductService/GetProduct") == (
        "product",
        "/shop.product.v1.ProductService/GetProduct",
    )


async def test_mesh_yaml_picks_the_direct_plane(tmp_path: Path) -> None:
    config = parse_config(
        {"mesh": {"dataplane": "direct"}, "services": {"product": {}}}, tmp_path / "mesh.yaml"
    )
    ensure_certificates(tmp_path / "certs", config.trust_domain, config.namespace, ["order"])

    plane = data_plane(config, IdentityFiles(tmp_path / "certs", "order"), StaticSource([]))
    channel = plane.open("product")
    try:
        assert isinstance(plane, DirectDataPlane)
        assert isinstance(channel, ServiceChannel)
    finally:
        await channel.close()
