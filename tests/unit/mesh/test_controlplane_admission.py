"""The control plane gives a sidecar only the config of the service whose certificate
it presents: a node that claims another service is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.config import MeshConfig
from mesh.envoy import SidecarNode
from mesh.xds._controlplane import _own_identity

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
