"""The control plane gives a sidecar only the config of the service whose certificate
it presents (a node that claims another service is refused), and keeps each sidecar's
last refusal of a config in etcd for `meshctl status`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from mesh.config import MeshConfig
from mesh.envoy import SidecarNode
from mesh.xds._controlplane import _NackBook, _own_identity

CONFIG = MeshConfig(path=Path("mesh.yaml"))


class _Peer:
    def __init__(self, *sans: bytes) -> None:
        self._sans = list(sans)

    def peer_identities(self) -> list[bytes] | None:
        return self._sans or None


def _node(service: str) -> SidecarNode:
    return SidecarNode(
        node_id=f"{service}-1", service=service, version="v1", inbound_host="127.0.0.1",
        inbound_port=1, app_socket="/a", outbound_socket="/o", cert_chain="/c",
        private_key="/k", ca="/ca",
    )  # fmt: skip


def _admit(node: SidecarNode, peer: Any) -> str | None:
    return _own_identity(CONFIG, node, peer)


def test_a_sidecar_with_its_services_certificate_is_admitted() -> None:
    peer = _Peer(b"inventory.default.shop.local", b"spiffe://shop.local/ns/default/sa/inventory")
    assert _admit(_node("inventory"), peer) is None


def test_a_node_that_claims_another_service_is_refused_naming_both() -> None:
    refusal = _admit(_node("order"), _Peer(b"spiffe://shop.local/ns/default/sa/product"))
    assert refusal is not None
    assert "order" in refusal
    assert "sa/product" in refusal


def test_a_peer_without_a_certificate_identity_is_refused() -> None:
    assert _admit(_node("order"), _Peer()) is not None


class _Etcd:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self.values[key] = value
        return 1

    async def delete(self, key: str) -> int:
        return int(self.values.pop(key, None) is not None)


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_nack_is_kept_in_etcd_until_the_next_ack_of_its_type() -> None:
    etcd = _Etcd()
    book = _NackBook(etcd, "/p")  # type: ignore[arg-type]
    book.nacked("order-1", "type.cluster", "bad cluster")
    await _settled()
    assert json.loads(etcd.values["/p/xds/order-1"]) == {"nacks": {"type.cluster": "bad cluster"}}
    book.acked("order-1", "type.listener", "v1")  # another type: still refused
    await _settled()
    assert "/p/xds/order-1" in etcd.values
    book.acked("order-1", "type.cluster", "v2")
    await _settled()
    assert "/p/xds/order-1" not in etcd.values
