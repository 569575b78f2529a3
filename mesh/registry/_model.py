"""What an instance registers, and where in etcd it lives."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "Endpoint",
    "authz_key",
    "controlplane_key",
    "fault_key",
    "faults_root",
    "instance_key",
    "service_prefix",
    "services_root",
    "traffic_key",
    "traffic_root",
    "xds_status_root",
]


def services_root(prefix: str) -> str:
    """Key prefix under which every instance of every service registers."""
    return f"{prefix}/services/"


def service_prefix(prefix: str, service: str) -> str:
    """Key prefix under which every instance of `service` registers (ends with '/')."""
    return f"{services_root(prefix)}{service}/"


def instance_key(prefix: str, service: str, instance_id: str) -> str:
    return service_prefix(prefix, service) + instance_id


@dataclass(frozen=True)
class Endpoint:
    """One registered instance of a service.

    `address` is host:port to dial. `metadata` holds extras such as the metrics address;
    it is compared but not hashed, so endpoints can live in sets.
    """

    service: str
    instance_id: str
    address: str
    version: str = "v1"
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "service": self.service,
                "id": self.instance_id,
                "address": self.address,
                "version": self.version,
                "metadata": dict(self.metadata),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Endpoint:
        """Decode a registry value; raises ValueError if it is not one."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("registry value is not a JSON object")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("registry value's metadata is not a JSON object")
        try:
            return cls(
                service=str(data["service"]),
                instance_id=str(data["id"]),
                address=str(data["address"]),
                version=str(data.get("version", "v1")),
                metadata={str(k): str(v) for k, v in metadata.items()},
            )
        except KeyError as missing:
            raise ValueError(f"registry value lacks {missing}") from None


def authz_key(prefix: str) -> str:
    """The live authz table (JSON list of rules); absent: mesh.yaml's table holds."""
    return f"{prefix}/config/authz"


def traffic_root(prefix: str) -> str:
    """Key prefix of the live version weights, one key per service."""
    return f"{prefix}/traffic/"


def traffic_key(prefix: str, service: str) -> str:
    """The live version weights of `service` (JSON object version -> weight)."""
    return traffic_root(prefix) + service


def controlplane_key(prefix: str) -> str:
    """Where the xDS control plane registers its address (under its lease)."""
    return f"{prefix}/controlplane"


def xds_status_root(prefix: str) -> str:
    """Key prefix of each sidecar's xDS status as the control plane last saw it."""
    return f"{prefix}/xds/"


def faults_root(prefix: str, service: str) -> str:
    """Key prefix of `service`'s live per-method faults (`meshctl fault`), one key per
    method; a method without one has mesh.yaml's fault, if any."""
    return f"{prefix}/faults/{service}/"


def fault_key(prefix: str, service: str, method: str) -> str:
    """The live fault of `method` (named as given: `Charge`, or
    `shop.payment.v1.PaymentService/Charge`), a JSON MethodFault."""
    return faults_root(prefix, service) + method
