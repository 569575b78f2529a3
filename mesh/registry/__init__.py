"""Service registry on etcd: registration under a lease, and discovery by watching."""

from mesh.registry._discovery import EndpointSource, EtcdDiscovery
from mesh.registry._etcd import Change, EtcdClient
from mesh.registry._model import Endpoint, instance_key, service_prefix, services_root
from mesh.registry._registration import Registration

__all__ = [
    "Change",
    "Endpoint",
    "EndpointSource",
    "EtcdClient",
    "EtcdDiscovery",
    "Registration",
    "instance_key",
    "service_prefix",
    "services_root",
]
