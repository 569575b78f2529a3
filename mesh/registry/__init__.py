"""Service registry on etcd: registration under a lease, and discovery by watching."""

from mesh.registry._discovery import EndpointSource, EtcdDiscovery, decode_endpoints, watch_tree
from mesh.registry._etcd import Change, EtcdClient
from mesh.registry._faults import LiveFaults, decode_fault, encode_fault
from mesh.registry._live import (
    LivePolicy,
    decode_authz,
    decode_weights,
    encode_authz,
    encode_weights,
)
from mesh.registry._model import (
    Endpoint,
    authz_key,
    controlplane_key,
    fault_key,
    faults_root,
    instance_key,
    service_prefix,
    services_root,
    traffic_key,
    traffic_root,
    xds_status_root,
)
from mesh.registry._registration import Registration

__all__ = [
    "Change",
    "Endpoint",
    "EndpointSource",
    "EtcdClient",
    "EtcdDiscovery",
    "LiveFaults",
    "LivePolicy",
    "Registration",
    "authz_key",
    "controlplane_key",
    "decode_authz",
    "decode_endpoints",
    "decode_fault",
    "decode_weights",
    "encode_authz",
    "encode_fault",
    "encode_weights",
    "fault_key",
    "faults_root",
    "instance_key",
    "service_prefix",
    "services_root",
    "traffic_key",
    "traffic_root",
    "watch_tree",
    "xds_status_root",
]
